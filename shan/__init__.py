"""SHAN: Step-Wise Hierarchical Alignment Network for image-text matching (Ji et al., IJCAI 2021).

Data flows one way: ``app.py -> demo/ -> shan/``; nothing in ``shan/`` imports ``demo/`` or Gradio.
"""

__version__ = "0.1.0"

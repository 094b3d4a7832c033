"""What the loaded model knows and does not: read from its card (config extra, front matter, Limits
section), shown in the banner and under About — never hard-coded."""

from __future__ import annotations

import json

import pytest

from demo import views
from demo.card import MAX_FACT_CHARS, MAX_FACTS, ModelCard, limits_section, read_card
from tests.app_fixtures import SHIPPED_CHECKPOINT, make_pipeline

FRONT = """---
license: apache-2.0
knows:
  - colours and shapes of objects
  - sizes and patterns
does_not_know:
  - where objects are (left of, above)
---
# A card

## Limits
- something else entirely
"""


def test_front_matter_facts_win_over_the_limits_section():
    card = ModelCard.from_markdown(FRONT)
    assert card.source == "front matter"
    assert card.knows == ["colours and shapes of objects", "sizes and patterns"]
    assert card.does_not_know == ["where objects are (left of, above)"]
    assert card.text.startswith("# A card") and "license" not in card.text


def test_config_extra_wins_over_the_front_matter():
    card = ModelCard.from_markdown(FRONT, {"card": {"knows": "counts"}})
    assert (card.source, card.knows, card.does_not_know) == ("config", ["counts"], [])


def test_an_older_card_gives_its_limits_section():
    text = "# Card\n\n## Limits\n- no photos\n- no positions,\n  continued\n\n## Next\n- not this\n"
    card = ModelCard.from_markdown(text)
    assert card.source == "limits"
    assert card.does_not_know == ["no photos", "no positions, continued"]
    assert limits_section("## Limitations\n* one\n") == ["one"]


@pytest.mark.parametrize(
    "text",
    [
        "---\nknows: [\n---\n# Broken YAML\n",  # unreadable front matter: no facts, no crash
        "---\nknows: 3\ndoes_not_know: {a: 1}\n---\n# Wrong types\n",
        "# No facts at all\n",
    ],
)
def test_cards_without_usable_facts(text):
    card = ModelCard.from_markdown(text)
    assert not card.has_facts and card.source == "none" and card.text.startswith("# ")
    assert "without a card saying what it knows" in views.banner(card)


def test_facts_are_bounded():
    many = {"card": {"knows": [f"fact {i} " + "x" * 500 for i in range(20)]}}
    card = ModelCard.from_markdown(None, many)
    assert len(card.knows) == MAX_FACTS and all(len(k) <= MAX_FACT_CHARS for k in card.knows)


def test_banner_and_about_say_what_the_card_says():
    card = ModelCard.from_markdown(FRONT)
    banner = views.banner(card)
    assert "colours and shapes of objects" in banner and "where objects are" in banner
    about = views.card_facts(card)
    assert "- sizes and patterns" in about and "- where objects are (left of, above)" in about
    assert views.card_facts(ModelCard()) == "The loaded model comes without a model card."


def test_read_card_from_a_checkpoint_directory(tmp_path):
    ckpt = tmp_path / "ckpt" / "shan"
    ckpt.mkdir(parents=True)
    (tmp_path / "ckpt" / "README.md").write_text(FRONT)  # the shipped layout: the parent's card
    card = read_card(ckpt, {"card": {"does_not_know": ["counts"]}})
    assert card.source == "config" and card.does_not_know == ["counts"]
    assert read_card(ckpt).source == "front matter"
    assert read_card(tmp_path / "nowhere") == ModelCard()


@pytest.mark.skipif(
    not (SHIPPED_CHECKPOINT.parent / "README.md").is_file(), reason="no shipped card"
)
def test_the_shipped_card_gives_a_banner():
    card = read_card(
        SHIPPED_CHECKPOINT, json.loads((SHIPPED_CHECKPOINT / "config.json").read_text())["extra"]
    )
    assert card.has_facts
    assert "⚠️" in views.banner(card)


def test_pipeline_reads_the_card_and_passes_the_calibration(tmp_path):
    pipe = make_pipeline(tmp_path)
    assert pipe.card == ModelCard() and pipe.calibration is None
    from demo.pipeline import DemoPipeline

    marker = object()
    other = DemoPipeline(
        pipe.model, pipe.text, pipe.extractor, model_card=FRONT, calibration=marker
    )
    assert other.card.knows[0] == "colours and shapes of objects"
    from tests.app_fixtures import scene

    assert other.match(scene(), "a red circle").calibration is marker
    assert other.search([scene()], "a red circle").calibration is marker

"""Train SHAN on precomputed SCAN-format region features (the CLI: :mod:`shan.cli.train`).

Example::

    shan-train --config configs/f30k.json --set data.root=data --set train.lr=1e-4

The config file is JSON with the sections ``"model"``, ``"data"`` and ``"train"`` (fields of
:class:`~shan.config.ModelConfig`, :class:`~shan.config.DataConfig`,
:class:`~shan.config.TrainConfig`); ``--set section.field=value`` overrides one field (a bare
``field=value`` works when the name is in only one section).

Per epoch: VSE++ hardest-negative triplet loss on SHAN's total score, Adam, gradient clipping,
lr ×0.1 after ``lr_decay_epoch`` epochs (StepLR), mixed precision on CUDA (bf16 when supported,
else fp16 with a GradScaler), then validation rSum on ``data.val_split`` (first
``max_val_images`` images). Output in ``train.out_dir``:

* ``best/`` — checkpoint (:func:`shan.checkpoint.save_checkpoint`) with the best validation rSum;
  ``extra`` holds epoch, rsum, the validation metrics and the data name;
* ``last/`` — the latest checkpoint plus ``train_state.pt`` (optimizer, scheduler, scaler, epoch;
  read back with ``torch.load(weights_only=True)``) for ``--resume OUT_DIR/last``;
* ``train_config.json`` and ``log.jsonl`` (one JSON line per epoch).

**[beyond the paper]** (every switch off by default, which is the paper's training):

* ``model.use_geometry``: the batches carry each region's box normalised by its image size
  (``{split}_boxes.npy`` / ``{split}_sizes.npy``, written by ``shan-extract``; data without them
  is refused before training starts);
* ``train.hard_negatives`` (``typed`` / ``swap`` / ``auto``): every caption brings
  ``negatives_per_caption`` false captions made from it; each image is scored against its own
  (:meth:`shan.model.SHAN.score_own`, only the pairs the loss needs) and
  ``hard_negative_weight * [margin + S(i, neg) - S(i, i)]_+`` joins the VSE++ loss
  (:class:`shan.model.ContrastiveLoss`). The log records per epoch the mean hinge and how often
  the true caption beat its negative on the training batches, and with a validation split the
  accuracy per negative type (:func:`shan.evaluation.negative_accuracy`);
* ``train.step_loss_weight > 0``: each enabled step's own scores get the same loss, weighted;
* ``train.pool_lr_scale``: learning-rate multiplier of step 2's pooling vectors.

Multi-GPU: launch with ``torchrun --nproc_per_node=G -m shan.cli.train ...``; ``WORLD_SIZE`` in the
environment switches on DistributedDataParallel with a DistributedSampler (``batch_size`` is per
process) and only rank 0 validates and writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from shan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from shan.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    to_dict,
    validate,
)
from shan.data.precomp import (
    PrecompDataset,
    load_split_arrays,
    read_negatives,
    swap_negatives,
)
from shan.data.vocab import TransformerTextProcessor, Vocabulary
from shan.device import resolve_device
from shan.errors import ShanError
from shan.evaluation import evaluate_arrays, format_metrics, negative_accuracy

TRAIN_STATE_NAME = "train_state.pt"
SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


class TrainingError(ShanError, FloatingPointError):
    """Training cannot go on (the loss is no longer a finite number)."""


# ---------------------------------------------------------------------------------------------
# configs


def load_config_file(path: str | Path) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """Read a JSON config with optional sections ``model``, ``data``, ``train``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid JSON: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a JSON object with model/data/train sections")
    unknown = sorted(set(data) - set(SECTIONS) - {"comment", "_comment"})
    if unknown:
        raise ConfigError(f"config file {p}: unknown sections {unknown} (use model, data, train)")
    out = []
    for name, cls in SECTIONS.items():
        try:
            out.append(from_dict(cls, data.get(name) or {}))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config file {p}, section {name!r}: {e}") from None
    return out[0], out[1], out[2]


def apply_set_overrides(
    cfgs: tuple[ModelConfig, DataConfig, TrainConfig], items: list[str]
) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """Apply ``section.field=value`` strings (``field=value`` if the field is in one section)."""
    per: dict[str, dict[str, str]] = {name: {} for name in SECTIONS}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            section, fld = key.split(".", 1)
            if section not in SECTIONS:
                raise ConfigError(f"--set {item!r}: unknown section {section!r} (model/data/train)")
        else:
            fld = key
            owners = [
                s
                for s, cls in SECTIONS.items()
                if fld.replace("-", "_") in {f.name for f in dataclasses.fields(cls)}
            ]
            if len(owners) != 1:
                raise ConfigError(
                    f"--set {item!r}: "
                    + ("no section has" if not owners else f"ambiguous, {owners} have")
                    + f" a field {fld!r}; write section.field=value"
                )
            section = owners[0]
        per[section][fld] = value
    out = []
    for (name, _), cfg in zip(SECTIONS.items(), cfgs):
        try:
            out.append(apply_overrides(cfg, per[name]) if per[name] else cfg)
        except ValueError as e:
            raise ConfigError(f"--set {name}: {e}") from None
    return out[0], out[1], out[2]


# ---------------------------------------------------------------------------------------------
# distributed helpers


def dist_info() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from the torchrun environment (1, 0, 0 otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# training


def _build_text(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    vocab: Vocabulary | TransformerTextProcessor | None,
    min_count: int,
) -> Vocabulary | TransformerTextProcessor:
    if model_cfg.text_encoder == "transformer":
        if vocab is not None:
            return vocab
        if not model_cfg.transformer_path:
            raise ConfigError("model.text_encoder=transformer needs model.transformer_path")
        return TransformerTextProcessor(model_cfg.transformer_path, model_cfg.max_words)
    if vocab is not None:
        if not isinstance(vocab, Vocabulary):
            raise ConfigError("a GRU model needs a word Vocabulary")
        return vocab
    arrays = load_split_arrays(data_cfg.root, data_cfg.name, data_cfg.train_split)
    return Vocabulary.build(arrays.captions, min_count=min_count)


def _negative_types(train_cfg: TrainConfig) -> list[str] | None:
    """``train.hard_negative_types`` as a list (None: every type)."""
    text = train_cfg.hard_negative_types.strip()
    return [t.strip() for t in text.split(",")] if text else None


def _param_groups(model: torch.nn.Module, train_cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam's parameter groups: one, or with ``pool_lr_scale != 1`` the step-2 pooling vectors in
    a second group at ``lr * pool_lr_scale``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if train_cfg.pool_lr_scale == 1.0:
        return [{"params": params}]
    pool = {id(p) for name in ("pool_img", "pool_txt") for p in getattr(model, name).parameters()}
    pool_lr = train_cfg.lr * train_cfg.pool_lr_scale
    return [
        {"params": [p for p in params if id(p) not in pool]},
        {"params": [p for p in params if id(p) in pool], "lr": pool_lr},
    ]


def _validation_negatives(
    arrays: Any, train_cfg: TrainConfig, seed: int
) -> list[list[dict[str, str]]] | None:
    """The validation split's hard negatives, from the source training uses (None without)."""
    if train_cfg.hard_negatives == "none":
        return None
    typed = None
    if train_cfg.hard_negatives in ("typed", "auto"):
        typed = read_negatives(arrays.path, arrays.split)
    if typed is not None:
        negs = typed[: len(arrays.captions)]
    elif train_cfg.hard_negatives == "typed":
        return None
    else:
        negs = [swap_negatives(c, seed=seed + i) for i, c in enumerate(arrays.captions)]
    types = _negative_types(train_cfg)
    if types is not None:
        negs = [[n for n in per if n["type"] in types] for per in negs]
    return negs


def _autocast_setup(
    device: torch.device, amp: bool
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if not amp or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: Any,
    grad_clip: float,
    scaler: Any = None,
) -> None:
    """One update from ``loss``: zero the gradients, backward (scaled when ``scaler``, a
    ``torch.amp.GradScaler``, is given), clip the gradient norm to ``grad_clip`` (> 0) and step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def train(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    vocab: Vocabulary | TransformerTextProcessor | None = None,
    extra: dict[str, Any] | None = None,
    min_count: int = 1,
    progress: bool = True,
) -> Path:
    """Train a SHAN and return the directory of the best checkpoint (``<out_dir>/best``).

    Args:
        model_cfg: architecture (``vocab_size`` is set from the vocabulary).
        data_cfg: where the precomputed features are.
        train_cfg: optimisation settings; ``resume`` = a ``last/`` directory to continue from
            (its model config and vocabulary are used).
        vocab: the text processor; by default built from the training captions (GRU) or from
            ``model_cfg.transformer_path`` (transformer).
        extra: merged into every checkpoint's ``extra`` (e.g. a detector reference).
        min_count: minimum word count when building the vocabulary.
        progress: show tqdm bars (rank 0 only).
    """
    model_cfg, data_cfg, train_cfg = validate(model_cfg), validate(data_cfg), validate(train_cfg)
    world, rank, local_rank = dist_info()
    distributed = world > 1
    device = resolve_device(train_cfg.device, local_rank)
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    is_main = rank == 0
    _seed_everything(train_cfg.seed)
    out_dir = Path(train_cfg.out_dir)

    from shan.model import SHAN, ContrastiveLoss

    # ---- model, text processor (fresh or resumed)
    resume_state: dict[str, Any] | None = None
    if train_cfg.resume:
        loaded = load_checkpoint(train_cfg.resume, device="cpu")
        text = loaded.text
        model = loaded.model
        model_cfg = loaded.config
        state_path = Path(loaded.path) / TRAIN_STATE_NAME
        if not state_path.is_file():
            raise CheckpointError(f"cannot resume: missing {state_path} (resume from a last/ dir)")
        resume_state = torch.load(state_path, map_location="cpu", weights_only=True)
    else:
        text = _build_text(model_cfg, data_cfg, vocab, min_count)
        if model_cfg.text_encoder == "gru":
            model_cfg = dataclasses.replace(model_cfg, vocab_size=len(text))
        words = list(text.itos) if isinstance(text, Vocabulary) else None
        model = SHAN(model_cfg, vocab_words=words)
        model_cfg = model.cfg
    model.to(device)

    # ---- data (validated up front, before any training step)
    train_ds = PrecompDataset(
        data_cfg.root,
        data_cfg.name,
        data_cfg.train_split,
        text,
        max_words=model_cfg.max_words,
        img_dim=model_cfg.img_dim,
        boxes=model_cfg.use_geometry,
        negatives=train_cfg.hard_negatives,
        negatives_per_caption=train_cfg.negatives_per_caption,
        negative_types=_negative_types(train_cfg),
        seed=train_cfg.seed,
    )
    val_arrays = None
    val_negatives = None
    if data_cfg.val_split:
        val_arrays = load_split_arrays(
            data_cfg.root,
            data_cfg.name,
            data_cfg.val_split,
            img_dim=model_cfg.img_dim,
            max_images=data_cfg.max_val_images or None,
        )
        if model_cfg.use_geometry:
            val_arrays.normalized_boxes()  # no boxes: refused now, not after the first epoch
        val_negatives = _validation_negatives(val_arrays, train_cfg, train_cfg.seed)
    batch_size = min(train_cfg.batch_size, len(train_ds))
    sampler = (
        DistributedSampler(
            train_ds, num_replicas=world, rank=rank, shuffle=True, seed=train_cfg.seed
        )
        if distributed
        else None
    )
    gen = torch.Generator()
    gen.manual_seed(train_cfg.seed)
    loader = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=train_ds.collate,
        num_workers=data_cfg.num_workers,
        drop_last=len(train_ds) // world >= 2 * batch_size,
        pin_memory=device.type == "cuda",
        generator=gen if sampler is None else None,
        persistent_workers=data_cfg.num_workers > 0,
    )

    # ---- optimisation
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(_param_groups(model, train_cfg), lr=train_cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, train_cfg.lr_decay_epoch), gamma=0.1
    )
    amp_dtype, scaler = _autocast_setup(device, train_cfg.amp)
    criterion = ContrastiveLoss(
        train_cfg.margin, train_cfg.max_violation, train_cfg.hard_negative_weight
    )
    step_names = [
        name
        for name, on in (
            ("l2l", model_cfg.use_l2l),
            ("g2l", model_cfg.use_g2l),
            ("g2g", model_cfg.use_g2g),
        )
        if on
    ]
    start_epoch, best_rsum = 0, -math.inf
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        start_epoch = int(resume_state["epoch"]) + 1
        best_rsum = float(resume_state.get("best_rsum", -math.inf))

    net: torch.nn.Module = model
    if distributed:
        c = model_cfg
        all_steps = c.use_l2l and c.use_g2l and c.use_g2g
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not all_steps,
        )

    base_extra = dict(extra or {})
    base_extra.update({"data": data_cfg.name, "train_split": data_cfg.train_split})
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg_dump = {
            "model": to_dict(model_cfg),
            "data": to_dict(data_cfg),
            "train": to_dict(train_cfg),
        }
        (out_dir / "train_config.json").write_text(json.dumps(cfg_dump, indent=2) + "\n")
        print(
            f"[shan-train] {len(train_ds)} captions / {train_ds.n_images} images, "
            f"text={type(text).__name__}({len(text)}), device={device}, world={world}, "
            f"amp={amp_dtype}, epochs {start_epoch}..{train_cfg.epochs - 1}",
            flush=True,
        )

    best_dir = out_dir / "best"
    for epoch in range(start_epoch, train_cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        t0 = time.time()
        losses: list[float] = []
        hinges: list[float] = []
        neg_wins = neg_count = 0
        it: Any = loader
        if progress and is_main:
            from tqdm.auto import tqdm

            it = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False)
        for step, batch in enumerate(it):
            feats = batch.feats.to(device, non_blocking=True)
            masks = batch.masks.to(device, non_blocking=True)
            tokens = batch.text.tokens.to(device, non_blocking=True)
            lengths = batch.text.lengths.to(device)
            boxes = None if batch.boxes is None else batch.boxes.to(device, non_blocking=True)
            ctx = (
                torch.autocast(device_type=device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else nullcontext()
            )
            with ctx:
                if batch.negatives is None and train_cfg.step_loss_weight == 0:
                    scores = net(feats, masks, tokens, lengths, boxes=boxes)
                    loss = criterion(scores.float())
                else:
                    neg_mask = None
                    neg_kw: dict[str, Any] = {}
                    if batch.negatives is not None:
                        neg_mask = batch.neg_mask.to(device)
                        neg_kw = {
                            "negatives": batch.negatives.tokens.to(device, non_blocking=True),
                            "neg_lengths": batch.negatives.lengths.to(device),
                        }
                    out = net(
                        feats,
                        masks,
                        tokens,
                        lengths,
                        boxes=boxes,
                        all_steps=train_cfg.step_loss_weight > 0,
                        **neg_kw,
                    )
                    neg = out.negatives
                    loss = criterion(
                        out.batch.total.float(),
                        None if neg is None else neg.total.float(),
                        neg_mask,
                    )
                    for name in step_names if train_cfg.step_loss_weight > 0 else ():
                        loss = loss + train_cfg.step_loss_weight * criterion(
                            getattr(out.batch, name).float(),
                            None if neg is None else getattr(neg, name).float(),
                            neg_mask,
                        )
                    if neg is not None and neg_mask is not None:
                        with torch.no_grad():
                            pos = out.batch.total.detach().float().diagonal()
                            ns = neg.total.detach().float()
                            hinges.append(
                                float(criterion.negative_hinge(pos, ns, neg_mask))
                                / max(1, len(pos))
                            )
                            won = (pos.view(-1, 1) > ns) & neg_mask
                            neg_wins += int(won.sum())
                            neg_count += int(neg_mask.sum())
            optimizer_step(loss, optimizer, params, train_cfg.grad_clip, scaler)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise TrainingError(
                    f"the loss is {losses[-1]} at epoch {epoch} step {step} (try a lower "
                    "train.lr or train.grad_clip)"
                )
            if is_main and train_cfg.log_every and (step + 1) % train_cfg.log_every == 0:
                msg = (
                    f"epoch {epoch} step {step + 1}/{len(loader)} loss {np.mean(losses[-50:]):.4f}"
                )
                if hasattr(it, "set_postfix_str"):
                    it.set_postfix_str(f"loss {np.mean(losses[-50:]):.3f}")
                else:
                    print(msg, flush=True)
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()
        train_time = time.time() - t0

        if is_main:
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "lr": lr_now,
                "train_seconds": round(train_time, 2),
            }
            if hinges:
                record["hard_negative_hinge"] = float(np.mean(hinges))
                record["hard_negative_train_acc"] = neg_wins / max(1, neg_count)
            metrics: dict[str, float] | None = None
            if val_arrays is not None:
                res = evaluate_arrays(
                    model,
                    text,
                    val_arrays,
                    device=device,
                    max_words=model_cfg.max_words,
                    chunk=train_cfg.score_chunk,
                )
                metrics = res["all"]
                record["val"] = metrics
                rsum = metrics["rsum"]
                if val_negatives is not None:
                    acc = negative_accuracy(model, text, val_arrays, val_negatives, device=device)
                    record["val_negatives"] = {
                        t: {"n": r["n"], **{k: r[k] for k in ("total", *step_names)}}
                        for t, r in {**acc["per_type"], "all": acc["all"]}.items()
                    }
            else:
                rsum = -float(record["loss"])  # no validation split: lower loss is "better"
            record["rsum"] = rsum
            ep_extra = dict(base_extra, epoch=epoch, rsum=rsum, val=metrics or {})
            if rsum > best_rsum:
                best_rsum = rsum
                save_checkpoint(best_dir, model, text, extra=ep_extra)
                record["best"] = True
            last = save_checkpoint(out_dir / "last", model, text, extra=ep_extra)
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "epoch": epoch,
                    "best_rsum": best_rsum,
                },
                last / TRAIN_STATE_NAME,
            )
            with (out_dir / "log.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            summary = f"epoch {epoch}: loss {record['loss']:.4f} lr {lr_now:.2e}"
            if metrics is not None:
                summary += "\n" + format_metrics(metrics, f"validation ({data_cfg.val_split})")
            print(summary + (" [best]" if record.get("best") else ""), flush=True)
        if distributed:
            torch.distributed.barrier()

    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if is_main and not best_dir.is_dir():  # e.g. resumed at the last epoch: nothing new trained
        save_checkpoint(best_dir, model, text, extra=dict(base_extra, epoch=start_epoch - 1))
    return best_dir

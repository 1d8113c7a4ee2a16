"""Sentence embeddings on ONNX Runtime: the model's transformer exported once from its torch weights
into a cache keyed by the model files' content, then tokenised, mean-pooled and L2-normalised as
sentence-transformers does (docs/decisions/0015-onnx-embeddings.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edrs_core import SettingsError

log = logging.getLogger("edrs.reasoning.embeddings")

# Part of the cache key: bump it when the export changes (opset, attention, quantisation), so a
# cache written by an older release is never read as the new one.
EXPORT_FORMAT = "1"
OPSET = 17
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def offline_hub() -> None:
    """Set before transformers or sentence-transformers import huggingface_hub, which reads it
    once: the model is a local folder and the service must never reach for the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class PipelineConfig:
    """What sentence-transformers does around the transformer, read from the model folder."""

    max_seq_length: int
    do_lower_case: bool
    dimension: int


def pipeline_config(model_dir: Path) -> PipelineConfig:
    """The model's modules must be Transformer → mean Pooling (→ Normalize): the pipeline this
    module reproduces. Anything else is refused, naming the setting that picks torch instead."""
    setting = "EDRS_REASONING_EMBEDDING_BACKEND"
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith(".Pooling"))
        pooling = json.loads((model_dir / pooling_dir / "config.json").read_text())
        bert = json.loads((model_dir / "sentence_bert_config.json").read_text())
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise SettingsError(
            f"{setting}: {model_dir} is not a sentence-transformers folder the onnx backend "
            f"can read ({exc}); use the torch backend"
        ) from None
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or (
        modes != ["pooling_mode_mean_tokens"]
    ):
        raise SettingsError(
            f"{setting}: the onnx backend runs Transformer, mean Pooling, Normalize models; "
            f"{model_dir} has {kinds} with {modes}; use the torch backend"
        )
    max_length = bert.get("max_seq_length") or config.get("max_position_embeddings", 512)
    return PipelineConfig(
        max_seq_length=int(max_length),
        do_lower_case=bool(bert.get("do_lower_case", False)),
        dimension=int(pooling["word_embedding_dimension"]),
    )


def model_digest(model_dir: Path) -> str:
    """SHA-256 over every file of the model folder (relative name and content) and the export
    format: the same weights and tokenizer give the same cache entry on every host."""
    digest = hashlib.sha256(f"edrs-onnx-export:{EXPORT_FORMAT}:{OPSET}\n".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(model_dir).as_posix()}\n".encode())
        digest.update(_file_sha256(path).encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_intact(path: Path) -> bool:
    """The file is there and matches the checksum written after it was complete."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        return sidecar.read_text().strip() == _file_sha256(path)
    except OSError:
        return False


def _publish(tmp: Path, path: Path) -> None:
    """Move a finished file into place, then its checksum: a reader sees both or re-exports.
    Two processes exporting at once each write their own temporary file; the last rename wins
    with identical content."""
    os.replace(tmp, path)
    sidecar = path.with_name(path.name + ".sha256")
    tmp_sidecar = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
    tmp_sidecar.write_text(_file_sha256(path) + "\n")
    os.replace(tmp_sidecar, sidecar)


def export_fp32(model_dir: Path, path: Path) -> None:
    """Export the transformer to `path` in a fresh interpreter (`python -m
    edrs_reasoning.onnx_embeddings MODEL_DIR PATH`). Not in the service's own process: TorchScript
    tracing fails there with a bare RuntimeError once another pybind11 extension has registered
    its types (pulsar-client's, which the service imports when its bus is Pulsar), and the torch
    model the export loads is freed with the child rather than kept for the life of the service."""
    offline_hub()
    done = subprocess.run(
        [sys.executable, "-m", __name__, str(model_dir), str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-12:])
        raise RuntimeError(
            f"exporting the embedding model at {model_dir} to ONNX failed "
            f"(exit {done.returncode}):\n{tail}"
        )


def _export_fp32_here(model_dir: Path, path: Path) -> None:
    """Export the transformer (token ids → last hidden state) with dynamic batch and sequence
    axes. Eager attention rather than SDPA: its graph is the one ONNX Runtime fuses into its
    Attention kernel. The TorchScript exporter (dynamo=False) needs only `onnx`, not onnxscript."""
    offline_hub()
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = torch.ones((2, 8), dtype=torch.long)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    axes = {"batch": 0, "sequence": 1}
    dynamic = {name: {i: n for n, i in axes.items()} for name in (*_INPUTS, "last_hidden_state")}
    with warnings.catch_warnings():
        # TracerWarnings and the exporter's deprecation notes, once per export, for no action.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(),
            (sample, sample, torch.zeros_like(sample)),
            str(tmp),
            dynamo=False,
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=OPSET,
        )
    _publish(tmp, path)


def quantise_int8(fp32: Path, path: Path) -> None:
    """Dynamic int8 quantisation of the weights, one scale per output channel: per tensor lost far
    more (cosine to float32 as low as 0.89 on passages against 0.98 per channel, measured)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    # The quantiser logs a "consider pre-processing" warning on the root logger for every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    _publish(tmp, path)


class OnnxEncoder:
    """Encodes texts as sentence-transformers' encode(normalize_embeddings=True) does: sorted by
    length into batches padded to their longest text, truncated at max_seq_length tokens, mean
    pooled over the attention mask, L2-normalised, returned in the caller's order."""

    def __init__(self, session: Any, tokenizer: Any, config: PipelineConfig, exported: bool):
        self.session = session
        self.tokenizer = tokenizer
        self.config = config
        self.dimension = config.dimension
        # True when this load exported (or quantised) the model rather than reading the cache.
        self.exported = exported
        self._inputs = {i.name for i in session.get_inputs()}

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._encode_batch([texts[i] for i in chunk])
        return out

    def padded_tokens(self, texts: list[str]) -> int:
        """Tokens one batch of `texts` feeds the model: texts times the longest, truncated."""
        if self.config.do_lower_case:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        return len(encodings) * (len(encodings[0].ids) if encodings else 0)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if self.config.do_lower_case:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised: np.ndarray = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised


def load(model_dir: Path, cache_dir: Path, *, quantised: bool, threads: int) -> OnnxEncoder:
    """The encoder for `model_dir`, exporting (and quantising) into `cache_dir` on the first
    start and whenever the cached file is missing or fails its checksum."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    config = pipeline_config(model_dir)
    entry = cache_dir / f"{model_dir.name}-{model_digest(model_dir)[:20]}"
    try:
        entry.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"EDRS_REASONING_EMBEDDING_CACHE_DIR: cannot create {entry} ({exc.strerror})"
        ) from None
    fp32, int8 = entry / FP32_FILE, entry / INT8_FILE
    target = int8 if quantised else fp32
    exported = False
    if not _is_intact(target):
        started = time.monotonic()
        if not _is_intact(fp32):
            export_fp32(model_dir, fp32)
        if quantised:
            quantise_int8(fp32, int8)
        exported = True
        log.info(
            "embedding model exported to ONNX",
            extra={"path": str(target), "seconds": round(time.monotonic() - started, 1)},
        )

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads sleep rather than spin: the host's cores are shared with llama.cpp (the
    # same reason app.py sets OMP_WAIT_POLICY=PASSIVE for torch).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    except Exception:
        if exported:
            raise
        # A file that passed its checksum yet does not load (written by a broken release, or
        # its checksum rewritten by hand): export it again, once.
        log.warning("cached ONNX model does not load; exporting it again", exc_info=True)
        target.with_name(target.name + ".sha256").unlink(missing_ok=True)
        if quantised:
            quantise_int8(fp32, int8)
        else:
            export_fp32(model_dir, fp32)
        exported = True
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizer.json may carry fixed padding and truncation (all-MiniLM-L6-v2's: 128 and 128);
    # sentence-transformers pads to the batch's longest text and truncates at max_seq_length.
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(
        pad_id=padding.get("pad_id", 0),
        pad_type_id=padding.get("pad_type_id", 0),
        pad_token=padding.get("pad_token", "[PAD]"),
        direction=padding.get("direction", "right"),
    )
    tokenizer.enable_truncation(max_length=config.max_seq_length)
    log.info(
        "embedding model loaded",
        extra={"path": str(target), "backend": "onnx-int8" if quantised else "onnx"},
    )
    return OnnxEncoder(session, tokenizer, config, exported)


if __name__ == "__main__":
    # export_fp32's child: MODEL_DIR PATH.
    model_folder, target_file = sys.argv[1:3]
    _export_fp32_here(Path(model_folder), Path(target_file))

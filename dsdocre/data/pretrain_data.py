"""The pre-training data: this rank's micro-batches of document pairs, deterministic and resumable.

Three documented folders feed it (``docs/shards.md``): the fact-join pair shards (``pairs/``, one
record per document pair), the document shards they reference (``shards/``, read by key through
tar indexes) and, when the pairs were joined through the denoiser's kept labels, the scored shards
(only kept labels are positives). The folders are checked to belong together: the pairs name the
sha256 of the shard manifest they were joined from and of the scored manifest they kept labels
from, and the tokenizer that encoded the documents must be the model's.

The order is :class:`dsdocre.data.stream.SampleStream`'s: a pure function of (pair manifest,
seed, epoch), cut into global batches of ``micro x world x accumulation`` pair records, each rank
taking its slice of each. A step's slice is split into ``accumulation`` micro-batches. A slice of
the epoch's last, smaller global batch with fewer records than that is padded with weightless
micro-batches, and a rank whose slice is empty runs one record with weight 0: every rank makes the
same forward and backward calls, as ZeRO's collectives and DeepSpeed's accumulation count need,
and padding never counts. The task instances of a record (blanking, queries, negatives) are drawn from
``random.Random("{seed}/{epoch}/{pair key}")``: the same on any process layout.

The position is global batches consumed (:meth:`PairBatches.state_dict`); after a restart the
loader continues from it exactly. Loader workers (``workers > 0``, persistent: started once per
run) each build every workers-th step, which is the order in which ``torch.utils.data.DataLoader``
hands them back (:class:`dsdocre.data.loader.StepLoader`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from dsdocre import fsio
from dsdocre.data import manifest as mf
from dsdocre.data.encoding import MarkerTokenizer
from dsdocre.data.loader import StepLoader
from dsdocre.data.pretrain_examples import DocumentStore, PretrainExample, build_example, collate_pretrain
from dsdocre.data.stream import SampleStream
from dsdocre.errors import UserError

PAIRS_FORMAT = "dsdocre-pairs"


@dataclass
class Step:
    """One optimizer step of this rank: its micro-batches and what they hold."""

    epoch: int
    batch: int  # global batch number within the epoch
    micro_batches: list[dict]  # collated (collate_pretrain); each has "weight": 1.0, or 0.0 for padding
    pairs: int  # real pair records of this rank in the step
    tokens: int  # real (non-padding) tokens of this rank in the step
    keys: list[str]  # the real pair records' keys (what this rank consumed)

    @property
    def samples(self) -> int:  # what the training loop counts (dsdocre.train.loop.StepSource)
        return self.pairs

    def pin_memory(self) -> "Step":
        """The step in page-locked memory (DataLoader's pin_memory calls it): the copy to the GPU
        then runs without blocking the training loop."""
        self.micro_batches = [{k: v.pin_memory() for k, v in micro.items()} for micro in self.micro_batches]
        return self


def check_folders(pairs_dir: str | Path, shard_dir: str | Path, scored_dir: str | Path | None,
                  tokenizer: MarkerTokenizer, checksums: bool = True) -> Path | None:
    """The folders belong together; returns the scored folder to read kept labels from (the one
    the pairs were joined through, or None when they were joined over every distant label).
    ``checksums=False``: files checked by size, not hashed (another process verified them)."""
    pairs = mf.load(pairs_dir, PAIRS_FORMAT)
    source = pairs.get("source")
    kept = pairs.get("kept_pairs")
    for field, value in (("source", source), ("kept_pairs", kept)):
        if (value is not None or field == "source") and not (
                isinstance(value, dict) and all(isinstance(value.get(k), str) for k in ("path", "manifest_sha256"))):
            raise mf.ShardVerificationError(f"{Path(pairs_dir) / mf.MANIFEST}: manifest field {field}: expected "
                                            "{path, manifest_sha256} (the manifest is damaged: re-run fact-join)")
    mf.load(shard_dir)  # a clear error when it is not a finished shard folder
    shard_sha = mf.sha256_file(Path(shard_dir) / mf.MANIFEST)
    if source["manifest_sha256"] != shard_sha:
        raise UserError(f"{pairs_dir} was joined from the shards at {source['path']}, not from {shard_dir} "
                        "(their manifests differ: another corpus, or its manifest.json was changed since); pass "
                        "the document shards the fact join read")
    if source.get("tokenizer_fingerprint") != tokenizer.fingerprint():
        raise UserError(f"{shard_dir}: documents were tokenized with tokenizer {source.get('tokenizer_fingerprint')} "
                        f"(as {Path(pairs_dir) / mf.MANIFEST} records), the model's encoder uses "
                        f"{tokenizer.fingerprint()}: re-shard with the model's encoder")
    # The documents are read by key from these shards (and kept labels from the scored ones): every
    # file is checked against its manifest first, so a damaged shard is named, never half-read.
    mf.verify(shard_dir, expected_fingerprint=tokenizer.fingerprint(), checksums=checksums)
    if kept is None:
        if scored_dir:
            raise UserError(f"{pairs_dir} was joined over every distant label (no --kept); a scored folder "
                            f"({scored_dir}) would make positives of a different set: re-run fact-join with --kept")
        return None
    scored = Path(scored_dir or kept["path"])
    if not (scored / mf.MANIFEST).is_file():
        raise UserError(f"{pairs_dir} was joined through the kept labels of {kept['path']}, which is not there; "
                        "pass the scored folder with data.scored")
    if mf.sha256_file(scored / mf.MANIFEST) != kept["manifest_sha256"]:
        raise UserError(f"{scored}: not the scored folder {pairs_dir} was joined through (manifests differ)")
    from dsdocre.data.scored import FORMAT as SCORED, FORMAT_VERSION as SCORED_VERSION

    mf.verify(scored, expected_format=SCORED, expected_version=SCORED_VERSION, checksums=checksums)
    return scored


VERIFIED = "verified.json"  # in a run's output folder: the data folders the ranks hashed, and their files' stats
VERIFIED_VALID = "verified-valid.json"  # the same, for the held-out pairs' folders


def data_folders(pairs_dir: str | Path, shard_dir: str | Path, scored_dir: str | Path | None) -> list[Path]:
    """The folders a pre-training run reads: pairs, document shards and (when the pairs were joined
    through kept labels) the scored shards."""
    kept = mf.load(pairs_dir, PAIRS_FORMAT).get("kept_pairs")
    scored = scored_dir or (kept.get("path") if isinstance(kept, dict) else None)
    return [Path(pairs_dir), Path(shard_dir), *([Path(scored)] if scored else [])]


def _file_stats(folders: list[Path]) -> dict:
    """Per folder: its manifest's sha256 and every listed file's (size, modification time)."""
    stats = {}
    for folder in folders:
        manifest = json.loads((folder / mf.MANIFEST).read_bytes())
        files = {}
        for entry in mf.files_of(manifest):
            st = (folder / entry["name"]).stat()
            files[entry["name"]] = [st.st_size, st.st_mtime_ns]
        stats[str(folder.resolve())] = {"manifest_sha256": mf.sha256_file(folder / mf.MANIFEST), "files": files}
    return stats


def verified_before(stamp: Path, folders: list[Path]) -> bool:
    """Whether ``stamp`` says these folders were hashed and their files have not changed since
    (same manifest, same sizes and modification times): a restarted run need not hash them again."""
    try:
        recorded = json.loads(stamp.read_text())
        return all(recorded.get(key) == value for key, value in _file_stats(folders).items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def record_verified(stamp: Path, folders: list[Path]) -> None:
    fsio.write_json_atomic(stamp, _file_stats(folders), indent=None)


def hash_share(folders: list[Path], rank: int, world: int) -> list[tuple[Path, dict]]:
    """This rank's part of the files to hash: every listed file of the folders, dealt to the ranks
    largest first, each to the rank with the fewest bytes so far (the same deal on every rank), so
    that each rank reads about 1/world of the corpus."""
    import heapq

    entries = [(folder, entry) for folder in folders
               for entry in mf.files_of(json.loads((folder / mf.MANIFEST).read_bytes()))]
    order = sorted(range(len(entries)), key=lambda i: (-entries[i][1]["bytes"], i))
    loads = [(0, r) for r in range(world)]  # (bytes dealt, rank): a heap
    mine = []
    for i in order:
        dealt, r = heapq.heappop(loads)
        heapq.heappush(loads, (dealt + entries[i][1]["bytes"], r))
        if r == rank:
            mine.append(entries[i])
    return mine


def hash_problems(share: list[tuple[Path, dict]]) -> list[str]:
    """'path: why' for each file of ``share`` whose sha256 (or size) is not its manifest's."""
    return [f"{folder / entry['name']}: {why}" for folder, entry in share
            if (why := mf.check_file(folder, entry, checksum=True))]


class PairBatches:
    """This rank's pre-training steps from its current position to the end of the epoch."""

    def __init__(self, pairs_dir: str | Path, shard_dir: str | Path, tokenizer: MarkerTokenizer, *,
                 micro_batch: int, accumulation: int = 1, rank: int = 0, world: int = 1, seed: int = 0,
                 scored_dir: str | Path | None = None, blank_prob: float = 0.7, negatives: int = 5,
                 workers: int = 0, shuffle: bool = True, checksums: bool = True):
        self.scored_dir = check_folders(pairs_dir, shard_dir, scored_dir, tokenizer, checksums)
        self.pairs_dir, self.shard_dir = Path(pairs_dir), Path(shard_dir)
        self.tokenizer, self.blank_prob, self.negatives = tokenizer, blank_prob, negatives
        self.micro_batch, self.accumulation, self.workers = micro_batch, accumulation, workers
        self.stream = SampleStream(pairs_dir, micro_batch * world * accumulation, seed=seed, rank=rank, world=world,
                                   shuffle=shuffle, expected_format=PAIRS_FORMAT, checksums=checksums)
        self.seed = seed
        self._store: DocumentStore | None = None
        self._loader = StepLoader(self._build, workers)  # persistent workers: started once per run

    # ---- position --------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.stream.global_batch

    @property
    def epoch(self) -> int:
        return self.stream.position.epoch

    def steps_per_epoch(self) -> int:
        return self.stream.batches_per_epoch()

    def advance(self) -> None:
        """One step consumed (call after the optimizer step)."""
        self.stream.advance(1)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    # ---- building ----------------------------------------------------------------------------
    def example(self, key: str, record: dict, epoch: int) -> PretrainExample:
        if self._store is None:
            self._store = DocumentStore(self.shard_dir, self.scored_dir)
        rng = random.Random(f"{self.seed}/{epoch}/{key}")
        return build_example(record, self._store, self.tokenizer, rng, blank_prob=self.blank_prob,
                             negatives=self.negatives)

    def build_step(self, epoch: int, batch: int, samples: list[tuple[int, int]]) -> Step:
        weights = [1.0] * len(samples)
        if not samples:  # this rank's slice of the last, smaller global batch is empty: pad, weight 0
            samples, weights = [self.stream.sample_at(epoch, batch * self.stream.global_batch)], [0.0]
        examples, keys = [], []
        for s, i in samples:
            raw = self.stream.read(s, i)
            keys.append(raw["__key__"])
            examples.append(self.example(raw["__key__"], json.loads(raw["pair.json"]), epoch))
        micro_batches = []
        for part in np.array_split(np.arange(len(examples)), min(self.accumulation, len(examples))):
            collated = collate_pretrain([examples[i] for i in part], self.tokenizer.pad_id)
            collated["weight"] = torch.tensor(weights[part[0]])
            micro_batches.append(collated)
        # Always `accumulation` micro-batches: DeepSpeed finds the accumulation boundary by counting
        # them (a shorter step would leave every later boundary one micro-batch off, so no optimizer
        # step would ever be applied again), and ZeRO's collectives need the same calls on every rank.
        while len(micro_batches) < self.accumulation:
            padding = collate_pretrain([examples[0]], self.tokenizer.pad_id)
            padding["weight"] = torch.tensor(0.0)
            micro_batches.append(padding)
        real = [e for e, w in zip(examples, weights) if w]
        tokens = sum(len(d.input_ids) for e in real for d in e.docs)
        return Step(epoch, batch, micro_batches, len(real), tokens, [k for k, w in zip(keys, weights) if w])

    def _build(self, epoch: int, start: int, worker: int, workers: int) -> Iterator[Step]:
        """Loader worker ``worker`` of ``workers``'s steps of ``epoch`` from global batch ``start`` on."""
        for b, samples in self.stream.my_batches(epoch, start, worker, workers):
            yield self.build_step(epoch, b, samples)

    def __iter__(self) -> Iterator[Step]:
        """Steps from the current position to the end of its epoch (call :meth:`advance` after each)."""
        position = self.stream.position
        return self._loader(position.epoch, position.batches)

    def close(self) -> None:
        self._loader.close()
        self.stream.close()
        if self._store is not None:
            self._store.close()

"""The pre-training heads (MM, RD, RA) on a tiny randomly initialised BERT: each task's scores are
the formula of the paper, switched-off tasks leave the loss, and every task can be learnt."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert

from dsdocre.data.encoding import EncodedDocument
from dsdocre.data.pretrain_examples import PretrainExample, collate_pretrain
from dsdocre.model.pretrain import TASKS, PretrainModel, TaskSwitches


def random_doc(rng: random.Random, entities: int, length: int) -> EncodedDocument:
    ids = [rng.randrange(25, 36) for _ in range(length)]
    positions = rng.sample(range(length), entities * 2)
    starts = [[positions[2 * e], positions[2 * e + 1]] for e in range(entities)]  # two mentions per entity
    return EncodedDocument(ids, starts, [[0, 0]] * entities)


def make_examples(seed: int = 0, pairs: int = 3) -> list[PretrainExample]:
    rng = random.Random(seed)
    out = []
    for _ in range(pairs):
        a, b = random_doc(rng, rng.randint(3, 5), rng.randint(20, 40)), random_doc(rng, rng.randint(3, 5), 30)
        na = a.num_entities
        ex = PretrainExample(docs=(a, b))
        # MM intra: mention 1 of entity 0 of d_A is the query; it is left out of entity 0's pooling
        ex.unpooled.append((0, 0, 1))
        ex.mm_intra.append((0, a.mention_starts[0][1], 0))
        ex.mm_inter.append((1, 2))  # entity 1 of d_B is entity 2 of d_A
        pos = ((0, 0), (0, 1))
        negatives = [((0, h), (0, t)) for h in range(na) for t in range(na) if h != t and (h, t) != (0, 1)]
        ex.rd_intra.append([pos] + rng.sample(negatives, 3))
        ex.rd_inter.append([((1, 0), (1, 2))] + rng.sample(negatives, 3))
        cands = [((0, h), (0, t)) for h, t in [(0, 1), (1, 2), (2, 0)]]
        ex.ra.append((((1, 0), (1, 1)), cands, 0))
        out.append(ex)
    return out


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    encoder = tiny_bert(tmp_path_factory.mktemp("enc"))
    torch.manual_seed(0)
    model = PretrainModel(encoder, TaskSwitches(), pair_dim=8, window_overlap=8, special_ids=(2, 3, 0))
    return model, make_examples()


def test_every_task_scores_with_the_papers_formula(model_and_batch):
    model, examples = model_and_batch
    model.eval()
    batch = collate_pretrain(examples, 0)
    with torch.no_grad():
        out = model(batch)
        states, entities = model.encode(batch)
        bil = torch.nn.Bilinear(entities.shape[-1], entities.shape[-1], 8)
        bil.weight.copy_(model.pair.weight)
        bil.bias.copy_(model.pair.bias)
        mm = torch.nn.Bilinear(entities.shape[-1], entities.shape[-1], 1)
        mm.weight.copy_(model.mention_entity.weight)
        mm.bias.copy_(model.mention_entity.bias)
    n = int(batch["num_entities"])
    B = len(examples)

    def e(b, ref):
        return entities[b, ref[0] * n + ref[1]]

    rd, ra, mmi, mmx = [], [], [], []
    for b, ex in enumerate(examples):
        scores = torch.stack([model.detect(bil(e(b, h)[None], e(b, t)[None]))[0, 0] for h, t in ex.rd_intra[0]])
        rd.append(torch.nn.functional.cross_entropy(scores[None], torch.tensor([0])))
        (qh, qt), cands, target = ex.ra[0]
        rq = bil(e(b, qh)[None], e(b, qt)[None])
        scores = torch.stack([model.align((bil(e(b, h)[None], e(b, t)[None]) - rq).abs())[0, 0] for h, t in cands])
        ra.append(torch.nn.functional.cross_entropy(scores[None], torch.tensor([target])))
        side, pos, target = ex.mm_intra[0]
        query = states[side * B + b, pos]
        na = ex.docs[side].num_entities
        scores = torch.stack([mm(e(b, (side, j))[None], query[None])[0, 0] for j in range(na)])
        mmi.append(torch.nn.functional.cross_entropy(scores[None], torch.tensor([target])))
        qb, qa = ex.mm_inter[0]
        query = e(b, (1, qb))
        scores = torch.stack([mm(e(b, (0, j))[None], query[None])[0, 0] for j in range(ex.docs[0].num_entities)])
        mmx.append(torch.nn.functional.cross_entropy(scores[None], torch.tensor([qa])))
    for name, manual in [("rd_intra", rd), ("ra", ra), ("mm_intra", mmi), ("mm_inter", mmx)]:
        assert torch.allclose(out[f"{name}_loss"], torch.stack(manual).mean(), atol=1e-5), name
    assert torch.allclose(out["loss"], sum(out[f"{t}_loss"] for t in TASKS), atol=1e-6)
    # the query mention does not pool into its own entity
    assert not batch["mention_mask"][0, 0, 1] and batch["mention_mask"][0, 0, 0]


@pytest.mark.parametrize("off", [["mm_intra", "mm_inter"], ["rd_intra", "rd_inter"], ["ra"],
                                 ["mm_inter", "rd_inter"], ["mm_intra", "rd_intra"]],
                         ids=["w/o MM", "w/o RD", "w/o RA", "w/o Inter", "w/o Intra"])
def test_switched_off_tasks_leave_the_loss(model_and_batch, off):
    model, examples = model_and_batch
    model.eval()
    batch = collate_pretrain(examples, 0)
    with torch.no_grad():
        full = model(batch)
        model.tasks = TaskSwitches(**{t: False for t in off})
        try:
            part = model(batch)
        finally:
            model.tasks = TaskSwitches()
    assert not any(f"{t}_loss" in part for t in off)
    kept = [t for t in TASKS if t not in off]
    assert torch.allclose(part["loss"], sum(full[f"{t}_loss"] for t in kept), atol=1e-6)


ABLATIONS = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs").glob("pretrain_ablation_*.yaml"))


@pytest.mark.parametrize("name", ABLATIONS)
def test_each_ablation_config_leaves_exactly_its_tasks(model_and_batch, name):
    """Each Table 2 ablation config is pretrain.yaml with some tasks off (nothing else changed), and
    with its switches the model computes the losses of its enabled tasks and no other."""
    import yaml

    from dsdocre.config import read_yaml, validate
    from dsdocre.pretrain import PretrainConfig

    path = Path(__file__).resolve().parents[2] / "configs" / name
    raw = yaml.safe_load(path.read_text())
    assert raw["base"] == "pretrain.yaml" and set(raw) == {"base", "output_dir", "tasks"}, raw
    switches = validate(PretrainConfig, read_yaml(path)).tasks
    assert 0 < len(switches.enabled()) < len(TASKS)
    model, examples = model_and_batch
    model.eval()
    with torch.no_grad():
        model.tasks = switches
        try:
            out = model(collate_pretrain(examples, 0))
        finally:
            model.tasks = TaskSwitches()
    assert {t for t in TASKS if f"{t}_loss" in out} == set(switches.enabled())


def test_each_task_learns(model_and_batch):
    model, examples = model_and_batch
    model.train()
    batch = collate_pretrain(examples, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        first = {t: float(model(batch)[f"{t}_loss"]) for t in TASKS}
    for _ in range(40):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        last = model(batch)
    for t in TASKS:
        assert float(last[f"{t}_loss"]) < 0.5 * first[t], (t, first[t], float(last[f"{t}_loss"]))
        assert float(last[f"{t}_accuracy"]) == 1.0, t


def test_relation_detection_groups_must_be_equal_sized():
    ex = make_examples(pairs=1)
    ex[0].rd_intra.append(ex[0].rd_intra[0][:2])
    with pytest.raises(ValueError, match="rd_intra: every group needs the same number of candidates"):
        collate_pretrain(ex, 0)


def test_held_out_scores_are_summed_over_ranks_through_the_collective_helper(monkeypatch):
    """evaluate_tasks adds every rank's counts through distributed.sum_over_ranks (whose tensor lives
    on the collective's device: NCCL rejects the CPU tensor it all-reduced before)."""
    from types import SimpleNamespace

    import torch

    from dsdocre import pretrain
    from dsdocre.model.pretrain import TASKS
    from dsdocre.train import distributed

    summed = []
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "sum_over_ranks", lambda values: summed.append(values) or [2 * v for v in values])
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda *a, **k: pytest.fail("a raw all_reduce"))

    class Engine:
        def __call__(self, micro):
            return {f"{TASKS[0]}_count": torch.tensor(4), f"{TASKS[0]}_accuracy": torch.tensor(0.5),
                    f"{TASKS[0]}_chance": torch.tensor(0.25)}

        def eval(self):
            pass

        def train(self):
            pass

    steps = [SimpleNamespace(micro_batches=[{}])]
    scores = pretrain.evaluate_tasks(Engine(), steps, lambda batch: batch)
    assert len(summed) == 1 and scores == {TASKS[0]: {"accuracy": 50.0, "chance": 25.0, "instances": 8}}


def test_a_task_without_instances_still_gives_its_head_a_zero_gradient(model_and_batch):
    """ZeRO-2 reduces gradients in buckets filled as each parameter's gradient arrives: a head
    with no gradient on one rank (its task had no instance in that rank's micro-batch) shifts every
    later bucket, and both ranks fail (found by benchmarks/scale.py at 100k documents). Every
    parameter gets a gradient on every micro-batch; the idle heads' are zero, and the loss is unchanged."""
    import copy

    model, examples = model_and_batch
    examples = copy.deepcopy(examples)
    for ex in examples:  # no Relation Alignment and no inter-document detection in this micro-batch
        ex.ra.clear()
        ex.rd_inter.clear()
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(collate_pretrain(examples, 0))
    out["loss"].backward()
    assert "ra_loss" not in out and "rd_inter_loss" not in out
    # (the encoder's pooler is used on no rank and no step: no mismatch, no gradient)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None and ".pooler." not in n]
    assert not missing, missing
    align = [p.grad for n, p in model.named_parameters() if n.startswith("align.")]
    assert align and all(float(g.abs().sum()) == 0.0 for g in align)
    kept = [t for t in TASKS if f"{t}_loss" in out]
    assert torch.allclose(out["loss"], sum(out[f"{t}_loss"] for t in kept), atol=0)
    model.zero_grad(set_to_none=True)

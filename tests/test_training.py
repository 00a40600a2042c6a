"""Training: a tiny run raises PSNR, checkpoints resume exactly, contrastive step works, time
budget, bf16 and loader workers, streamed shards, one set of flags."""
import argparse
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
from helpers import interrupt_at, synthetic
from napari_jpeg_restore.core.imageio.writing import write_image
from napari_jpeg_restore.core.models import create_model
from napari_jpeg_restore.core.registry import float_tensors, load_model
from napari_jpeg_restore.core.training.checkpoint import (
    load_checkpoint,
    portable_checkpoint,
    save_checkpoint,
)
from napari_jpeg_restore.core.training.data import ContrastiveSampler, PairSampler, to_tensor
from napari_jpeg_restore.core.training.lineage import total_cpu_hours
from napari_jpeg_restore.core.training.loop import fit
from napari_jpeg_restore.core.training.losses import fft_l1, info_nce, restoration_loss
from napari_jpeg_restore.core.training.options import TrainOptions, add_train_args
from napari_jpeg_restore.core.training.stages import train
from napari_jpeg_restore.core.training.tasks import ContrastiveTask, RestorationTask
from napari_jpeg_restore.core.training.validators import restoration_validator


def test_losses():
    x = torch.rand(2, 1, 16, 16)
    assert restoration_loss(x, x) == 0 and fft_l1(x, x) == 0
    assert restoration_loss(x, x + 0.1) > 0.1
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    good = info_nce(q, q, torch.nn.functional.normalize(torch.randn(16, 8), dim=1), 0.1)
    bad = info_nce(q, q.roll(1, 0), torch.nn.functional.normalize(torch.randn(16, 8), dim=1), 0.1)
    assert good < bad


def test_tiny_restorer_overfit_raises_psnr(tmp_path):
    torch.manual_seed(0)
    img = synthetic(0, (128, 160))
    model = create_model("crl", "lite", 1, use_encoder=False)
    task = RestorationTask(model, PairSampler([img], patch=64, qualities=(10, 10, 10)), batch=4)
    validate = restoration_validator(model, [img], qualities=(10,))
    before = validate()
    fit(task, steps=60, out_dir=tmp_path, lr=2e-3, device=torch.device("cpu"), log_every=20,
        val_every=60, validate=validate)
    after = validate()
    assert before["val_psnr_q10"] == pytest.approx(before["val_jpeg_q10"], abs=1e-6)
    assert after["val_psnr_q10"] > before["val_psnr_q10"] + 0.3


def test_a_compiled_forward_trains_as_the_module_does():
    """``--compile`` hands the task a torch.compile'd module (which has no truth value): its loss
    is the plain module's (dynamo's eager backend here; the loop compiles with inductor)."""
    torch.manual_seed(0)
    model = create_model("crl", "lite", 1, use_encoder=False)
    torch.nn.init.normal_(model.tail.weight, std=0.01)
    task = RestorationTask(model, PairSampler([synthetic(0, (96, 96))], patch=32), batch=2)
    batch = task.sample(np.random.default_rng(0))
    compiled = task.loss(batch, torch.compile(model, backend="eager"))
    torch.testing.assert_close(compiled, task.loss(batch))


def _arcnn_run(img, out, resume, until=None, grad_clip=0.0):
    """Ten seeded ARCNN steps on one picture, checkpointed every five."""
    torch.manual_seed(0)
    model = create_model("arcnn", channels=1)
    task = RestorationTask(model, PairSampler([img], patch=32), batch=2)
    return fit(task, steps=10, out_dir=out, lr=1e-3, device=torch.device("cpu"),
               resume=resume, log_every=5, ckpt_every=5, until=until, grad_clip=grad_clip)


def test_grad_clip_bounds_the_step(tmp_path):
    """Gradients clipped far below Adam's epsilon barely move the weights; the log keeps the
    norm before clipping, and an unclipped run logs none."""
    img = synthetic(1, (128, 160))
    torch.manual_seed(0)
    start = create_model("arcnn", channels=1).state_dict()
    free = _arcnn_run(img, tmp_path / "a", False)
    clipped = _arcnn_run(img, tmp_path / "b", False, grad_clip=1e-12)

    def moved(state):
        return sum(float((state["model"][k] - v).abs().sum()) for k, v in start.items())

    assert moved(clipped) < 0.01 * moved(free)
    assert all(r["grad_norm"] > 1e-6 for r in clipped["history"])
    assert all("grad_norm" not in r for r in free["history"])


def test_resume_continues_exactly(tmp_path):
    img = synthetic(1, (128, 160))
    run = partial(_arcnn_run, img)
    straight = run(tmp_path / "a", False)
    run(tmp_path / "b", False, until=5)  # an interrupted run
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 5
    resumed = run(tmp_path / "b", True)
    assert resumed["step"] == 10
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v)


def test_portable_checkpoint_resumes_on_schedule_with_fresh_moments(tmp_path):
    """What a campaign commits between machines: int8 kernels, no optimizer; the run goes on at
    its step and learning rate, and ends near where an uninterrupted run ends."""
    img = synthetic(1, (128, 160))
    run = partial(_arcnn_run, img)
    straight = run(tmp_path / "a", False)
    run(tmp_path / "b", False, until=5)
    full = load_checkpoint(tmp_path / "b" / "last.pt")
    small = portable_checkpoint(full)
    assert small["optimizer"] is None and small["step"] == 5
    for k, v in full["model"].items():
        stored = small["model"][k]
        if v.is_floating_point() and v.ndim >= 2:
            assert stored["int8"].dtype == torch.int8
            largest = v.abs().reshape(len(v), -1).amax(1).view(-1, *[1] * (v.ndim - 1))
            assert ((float_tensors({k: stored})[k] - v).abs() <= largest / 254 + 1e-7).all()
        else:
            assert stored.dtype == (torch.float16 if v.is_floating_point() else v.dtype)
    save_checkpoint(tmp_path / "c" / "last.pt", small)
    torch.testing.assert_close(load_model(tmp_path / "c" / "last.pt").state_dict(),
                               float_tensors(small["model"]), check_dtype=False)
    assert (tmp_path / "c" / "last.pt").stat().st_size < (tmp_path / "b" / "last.pt").stat().st_size / 4
    resumed = run(tmp_path / "c", True)
    assert resumed["step"] == 10 and [r["step"] for r in resumed["history"]] == [5, 10]
    assert resumed["history"][-1]["lr"] == straight["history"][-1]["lr"]
    for k, v in straight["model"].items():
        if v.is_floating_point():
            assert not torch.equal(resumed["model"][k], full["model"][k])  # it trained on
            torch.testing.assert_close(resumed["model"][k], v, atol=0.05, rtol=0)


def test_contrastive_step_updates_queue_and_key_encoder():
    img = synthetic(2, (192, 192))
    enc = create_model("cqe", "lite", 1)
    task = ContrastiveTask(enc, ContrastiveSampler([img], patch=32, region=64), batch=4, queue_size=16)
    before = task.key_encoder.stem.weight.clone()
    opt = torch.optim.Adam(task.parameters(), 1e-2)
    rng = np.random.default_rng(0)
    for _ in range(2):
        task.train_mode()
        loss = task.loss(task.sample(rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert task.ptr == 8
    assert not torch.equal(task.key_encoder.stem.weight, before)
    assert not any(p.requires_grad for p in task.key_encoder.parameters())


def test_table_positives_come_from_another_picture_with_the_same_tables():
    """--positives tables: the key is another picture at the query's quality; its hard negative
    is that picture at another quality; every key with the query's tables is a positive."""
    dark, light = np.full((128, 128), 40, np.uint8), np.full((128, 128), 210, np.uint8)
    sampler = ContrastiveSampler([dark, light], patch=32)  # tables: the default, as training's
    xq, xk, xh, quality = sampler.sample(16, np.random.default_rng(0))
    mq, mk, mh = (x.mean(dim=(1, 2, 3)) for x in (xq, xk, xh))
    assert torch.all((mq - mk).abs() > 0.5)  # never the query's picture
    assert torch.all((mk - mh).abs() < 0.05)  # the hard negative: the key's picture
    assert torch.all(quality[:, 0] != quality[:, 1])
    same = ContrastiveSampler([dark, light], patch=32, positives="image").sample(8, np.random.default_rng(0))
    assert torch.all((same[0].mean(dim=(1, 2, 3)) - same[1].mean(dim=(1, 2, 3))).abs() < 0.05)

    enc = create_model("cqe", "lite", 1)
    task = ContrastiveTask(enc, sampler, batch=4, queue_size=8, same_tables=True)
    task.queue_q[:] = torch.tensor([10, 20, 30, 40, 50, 60, 70, 80])
    quality = torch.tensor([[10, 20], [10, 30], [20, 10], [90, 10]])
    positives = task._same_tables(quality).bool()
    assert positives.shape == (4, 4 + 4 + 8)
    assert positives[0, 0] and positives[0, 1] and not positives[0, 2]  # keys with its tables
    assert positives[2, 4 + 0] and positives[0, 4 + 2] and not positives[0, 4 + 0]  # hard keys
    assert positives[0, 8 + 0] and positives[2, 8 + 1] and not positives[3, 8:].any()  # the queue
    task.quality_span = 20.0  # neighbouring qualities count half, two steps away not at all
    weights = task._same_tables(quality)
    assert weights[0, 2] == 0.5 and weights[0, 8 + 1] == 0.5 and weights[0, 8 + 2] == 0
    assert weights[0, 0] == 1 and weights[3, 8 + 7] == 0.5
    task.queue_q[:] = -1  # empty queue slots are never positives
    assert not task._same_tables(quality)[:, 8:].any()
    loss = task.loss(task.sample(np.random.default_rng(1)))
    assert torch.isfinite(loss) and set(task.queue_q[:4].tolist()) <= set(range(10, 91, 10))


def test_train_stage_exports_loadable_weights(tmp_path):

    data = tmp_path / "data"
    for i in range(3):
        write_image(data / f"im{i}.png", synthetic(i, (128, 160)))
    enc_opts = TrainOptions(stage="encoder", data=str(data), out=str(tmp_path / "enc"), steps=3,
                            batch=4, patch=32, queue=16, dct_width=8)
    enc_path = train(enc_opts)
    encoder = load_model(enc_path)
    assert encoder.meta["steps"] == 3 and "quality_probe_mae" in encoder.meta
    res_opts = TrainOptions(stage="restorer", data=str(data), out=str(tmp_path / "res"), steps=2,
                            batch=2, patch=32, encoder=str(enc_path), val_data=str(data), val_images=1)
    model = load_model(train(res_opts))
    # The restorer takes the trained encoder whole, its block-DCT branch included.
    assert model.encoder.cfg == encoder.cfg and model.encoder.cfg.dct_width == 8
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], value)
    # An encoder taken from a restorer brings only its encoder run's budget, not that restorer's.
    again = load_model(train(TrainOptions(stage="restorer", data=str(data), out=str(tmp_path / "res2"),
                                          steps=1, batch=2, patch=32, encoder=str(tmp_path / "res" / "model.pt"))))
    torch.testing.assert_close(again.encoder.stem.weight, encoder.stem.weight)
    assert again.meta["encoder"]["steps"] == 3 and again.meta["encoder"]["via"].endswith("model.pt")
    assert total_cpu_hours(again.meta) == pytest.approx(again.meta["cpu_hours"] + encoder.meta["cpu_hours"])
    with pytest.raises(ValueError, match="--encoder"):
        train(TrainOptions(stage="restorer", data=str(data), out=str(tmp_path / "x"), steps=1))


def test_pair_sampler_weighting_and_double_compression():
    from napari_jpeg_restore.core.jpeg.codec import compress

    img = synthetic(0, (96, 96))
    inverse = PairSampler([img], patch=32, qualities=(10, 90, 10), weighting="inverse")
    assert inverse._p[0] == pytest.approx(9 * inverse._p[-1])  # p(Q10) / p(Q90) = 90 / 10
    root = PairSampler([img], patch=32, qualities=(10, 90, 10), weighting="inverse-sqrt")
    assert root._p[0] == pytest.approx(3 * root._p[-1])  # sqrt(90 / 10)
    with pytest.raises(ValueError, match="weighting must be one of"):
        PairSampler([img], patch=32, weighting="square")
    rng = np.random.default_rng(0)
    qs = [inverse._quality(rng) for _ in range(4000)]
    assert np.mean(np.array(qs) == 10) > 2 * np.mean(np.array(qs) == 50)
    clean = img[:32, :32].copy()
    single = PairSampler([img], patch=32, qualities=(20, 20, 1))
    assert np.array_equal(single.degrade(clean, rng)[0], compress(clean, 20))
    twice = PairSampler([img], patch=32, qualities=(20, 20, 1), double=1.0)
    outs = [twice.degrade(clean, rng)[0] for _ in range(8)]  # random grid shifts
    assert any(not np.array_equal(o, compress(clean, 20)) for o in outs)
    with pytest.raises(ValueError, match="weighting"):
        PairSampler([img], weighting="log")
    with pytest.raises(ValueError, match="double"):
        PairSampler([img], double=1.5)


def test_recolour_turns_hues_and_keeps_gray():
    """Turned crops keep each pixel's channel mean (gray stays gray) but not its colour; the
    sampler turns colour crops only when asked, and leaves gray ones alone."""
    from napari_jpeg_restore.core.training.data import rotate_hue

    rng = np.random.default_rng(0)
    pink = np.zeros((32, 32, 3), np.uint8) + np.array([200, 120, 170], np.uint8)
    turned = [rotate_hue(pink, rng) for _ in range(8)]
    assert all(np.abs(t.astype(float).mean(-1) - pink.mean(-1)).max() <= 1.0 for t in turned)
    assert len({tuple(t[0, 0]) for t in turned}) == 8
    gray = np.full((8, 8, 3), 90, np.uint8)
    assert np.array_equal(rotate_hue(gray, rng), gray)
    colour = np.stack([64 + synthetic(s, (96, 96)) // 2 for s in range(3)], axis=-1)  # no clipping
    plain = PairSampler([colour], patch=32, qualities=(90, 90, 1))
    recoloured = PairSampler([colour], patch=32, qualities=(90, 90, 1), recolour=True)
    kept = plain.sample(1, np.random.default_rng(1))[1]  # the same crop, turned or not
    moved = recoloured.sample(1, np.random.default_rng(1))[1]
    assert not torch.allclose(kept, moved)
    assert torch.allclose(kept.mean(1), moved.mean(1), atol=2 / 255)
    one = PairSampler([synthetic(0, (96, 96))], patch=32, recolour=True)
    assert torch.equal(one.sample(2, np.random.default_rng(2))[1],
                       PairSampler([synthetic(0, (96, 96))], patch=32).sample(2, np.random.default_rng(2))[1])


def test_pair_sampler_clean_identity_pairs():
    img = synthetic(0, (96, 96))
    rng = np.random.default_rng(0)
    clean = img[:32, :32].copy()
    some = PairSampler([img], patch=32, qualities=(20, 20, 1), clean=0.5)
    same = [np.array_equal(some.degrade(clean, rng)[0], clean) for _ in range(200)]
    assert 0.35 < np.mean(same) < 0.65  # about half the pairs are identities
    x, y = PairSampler([img], patch=32, clean=1.0).sample(4, rng)
    assert torch.equal(x, y)
    with pytest.raises(ValueError, match="clean"):
        PairSampler([img], clean=-0.1)


def test_init_fine_tunes_from_weights_and_records_lineage(tmp_path):

    data = tmp_path / "data"
    for i in range(2):
        write_image(data / f"im{i}.png", synthetic(i, (128, 160)))
    base = load_model(train(TrainOptions(stage="arcnn", data=str(data), out=str(tmp_path / "a"),
                                         steps=2, batch=2, patch=32, lr=1e-2)))
    tuned_opts = TrainOptions(stage="arcnn", data=str(data), out=str(tmp_path / "b"), steps=1, batch=2,
                              patch=32, lr=0.0, init=str(tmp_path / "a" / "model.pt"), double=0.5,
                              weighting="inverse")
    tuned = load_model(train(tuned_opts))
    for p, q in zip(base.parameters(), tuned.parameters()):  # lr 0: the init weights unchanged
        torch.testing.assert_close(p, q)
    assert tuned.meta["init"]["steps"] == 2
    assert total_cpu_hours(tuned.meta) > tuned.meta["cpu_hours"]
    with pytest.raises(ValueError, match="architecture"):
        train(TrainOptions(stage="arcnn", data=str(data), out=str(tmp_path / "c"), steps=1, channels=3,
                           init=str(tmp_path / "a" / "model.pt")))


def test_init_from_a_shallower_restorer_grows_it(tmp_path):
    from napari_jpeg_restore.core.registry import save_weights

    write_image(tmp_path / "data" / "im.png", synthetic(0, (128, 160)))
    shallow = create_model("crl", "lite", 1, top_blocks=1)
    save_weights(shallow, tmp_path / "shallow.pt", {"steps": 7})
    grown = load_model(train(TrainOptions(stage="restorer", data=str(tmp_path / "data"), steps=1,
                                          out=str(tmp_path / "run"), batch=2, patch=32, lr=0.0,
                                          init=str(tmp_path / "shallow.pt"))))
    assert grown.cfg.top_blocks == create_model("crl", "lite", 1).cfg.top_blocks > 1
    assert grown.meta["init"]["grown"] == [f"top.{i}" for i in range(1, grown.cfg.top_blocks)]
    assert grown.meta["init"]["steps"] == 7


def test_table_conditioned_restorer_trains_from_a_blind_one_on_each_pairs_table(tmp_path):
    from napari_jpeg_restore.core.jpeg.codec import ijg_table
    from napari_jpeg_restore.core.registry import save_weights

    img = synthetic(0, (128, 160))
    rng = np.random.default_rng(0)
    x, y, steps = PairSampler([img], patch=32, qualities=(20, 20, 1), clean=0.5, tables=True).sample(64, rng)
    plain = (x != y).flatten(1).any(1)  # compressed pairs get Q20's table, identity pairs all ones
    assert torch.equal(steps[plain], torch.from_numpy(ijg_table(20).reshape(1, 64).astype(np.float32)).expand(int(plain.sum()), 64))
    assert torch.equal(steps[~plain], torch.ones(int((~plain).sum()), 64)) and 0 < plain.sum() < 64
    write_image(tmp_path / "data" / "im.png", img)
    save_weights(create_model("crl", "lite", 1, use_encoder=False), tmp_path / "blind.pt", {"steps": 3})
    run = load_model(train(TrainOptions(stage="restorer", data=str(tmp_path / "data"), steps=3,
                                        out=str(tmp_path / "run"), batch=2, patch=32, lr=1e-3,
                                        init=str(tmp_path / "blind.pt"), encoder_mode="none",
                                        table_condition=True)))
    assert run.cfg.condition and run.meta["init"]["grown"] == ["condition"]
    assert run.condition.out.weight.abs().sum() > 0  # the conditioning learned
    with pytest.raises(ValueError, match="restorer option"):
        TrainOptions(stage="encoder", data="x", out="y", table_condition=True)


def _overfit_task(seed=0):
    torch.manual_seed(seed)
    img = synthetic(seed, (128, 160))
    model = create_model("crl", "lite", 1, use_encoder=False, top_blocks=1)
    return img, RestorationTask(model, PairSampler([img], patch=48, qualities=(10, 10, 10)), batch=4)


def test_time_budget_ends_the_run_and_the_schedule(tmp_path, monkeypatch):
    """The loop's clock advances 0.05 s each time it is read (three times a step), whatever
    this machine's speed, so a 4 s budget is the same ~27 steps everywhere."""
    from types import SimpleNamespace

    from napari_jpeg_restore.core.training import loop

    ticks = iter(range(10**9))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: 0.05 * next(ticks)))
    _, task = _overfit_task()
    state = fit(task, steps=100000, time_budget=4.0, out_dir=tmp_path, lr=1e-3, device=torch.device("cpu"),
                log_every=5, ckpt_every=10**6)
    assert 20 <= state["step"] <= 30  # the budget, not the step count, ended it
    assert state["wall_seconds"] == pytest.approx(4.0, abs=0.2)
    assert state["history"][-1]["lr"] < 0.05 * 1e-3  # the cosine reached its floor with the budget
    assert load_checkpoint(tmp_path / "last.pt")["step"] == state["step"]  # saved at the end


def test_bf16_autocast_and_loader_workers_train(tmp_path):
    img, task = _overfit_task(1)
    validate = restoration_validator(task.model, [img], qualities=(10,))
    before = validate()["val_psnr_q10"]
    state = fit(task, steps=80, out_dir=tmp_path, lr=2e-3, device=torch.device("cpu"), log_every=10,
                precision="bf16", loader_workers=2)
    after = validate()["val_psnr_q10"]
    assert state["precision"] == "bf16" and state["step"] == 80
    assert 0.0 <= state["history"][-1]["data_wait"] <= 1.0 and state["history"][-1]["patches_per_s"] > 0
    assert after > before + 0.2


def test_image_shard_streams_within_its_cache(tmp_path):
    from napari_jpeg_restore.core.imageio.reading import load_images
    from napari_jpeg_restore.core.training.data import ImageShard

    paths = [str(tmp_path / f"{i}.png") for i in range(4)]
    for i, p in enumerate(paths):
        write_image(p, synthetic(i, (128, 160)))
    shard = ImageShard(paths, channels=1, cache_mb=0)  # keeps only the image in use
    eager = load_images(paths, 1)
    for i in (0, 3, 1, 0):
        np.testing.assert_array_equal(shard[i], eager[i])
    assert len(shard._cache) == 1 and len(shard) == 4


def test_training_flags_are_defined_once_for_cli_and_ray(capsys):
    from napari_jpeg_restore.core.cli import build_parser
    from napari_jpeg_restore.distributed import train as ray_train

    cli = build_parser().parse_args(["train", "encoder", "--data", "d", "--out", "o", "--init", "x.pt"])
    opts = TrainOptions.from_args(cli)
    assert (opts.patch, opts.batch, opts.init) == (64, 32, "x.pt")  # the Ray job had drifted to 96
    shared = argparse.ArgumentParser()
    add_train_args(shared)
    flags = {s for a in shared._actions for s in a.option_strings} - {"-h", "--help"}
    with pytest.raises(SystemExit):
        ray_train.main(["--help"])
    ray_help = capsys.readouterr().out
    assert flags and all(f in ray_help for f in flags)


def test_ranker_stage_learns_to_order_qualities_and_feeds_a_restorer_loss(tmp_path):
    from napari_jpeg_restore.core.jpeg.codec import compress
    from napari_jpeg_restore.core.training.losses import ranking_loss

    assert ranking_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([50]), torch.tensor([10]), 0.5) == 0
    assert ranking_loss(torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([50]), torch.tensor([10]), 0.5) > 2
    for i in range(3):
        write_image(tmp_path / "data" / f"im{i}.png", synthetic(i, (160, 192)))
    opts = TrainOptions(stage="ranker", data=str(tmp_path / "data"), out=str(tmp_path / "rank"),
                        steps=40, batch=8, patch=32, lr=2e-3, dct_width=16, qualities=(10, 90, 40))
    ranker = load_model(train(opts))
    assert ranker.meta["quality_probe_mae"] < 40
    held_out = synthetic(7, (160, 192))
    crops = {q: [compress(held_out, q)[y:y + 32, x:x + 32] for y in (0, 64) for x in (0, 96)]
             for q in (10, 90)}
    with torch.no_grad():
        score = {q: ranker(to_tensor(c), score=True) for q, c in crops.items()}
    assert (score[90] > score[10]).all()  # every unseen crop: Q90 above Q10
    write_image(tmp_path / "data" / "im0.png", synthetic(0, (160, 192)))
    run = load_model(train(TrainOptions(stage="restorer", data=str(tmp_path / "data"), steps=2,
                                        out=str(tmp_path / "restorer"), batch=2, patch=32,
                                        encoder_mode="none", ranker=str(tmp_path / "rank" / "model.pt"),
                                        ranker_loss=0.1)))
    assert run.meta["ranker"]["steps"] == 40
    with pytest.raises(ValueError, match="go together"):
        TrainOptions(stage="restorer", data="x", out="y", ranker_loss=0.1)


def test_ctrl_c_ends_a_cli_run_with_a_checkpoint_that_resumes(tmp_path):
    """The first Ctrl-C ends `jpeg-restore train` after the current step: checkpoint, model
    exported, exit 0; `--resume` goes on from that step."""
    write_image(tmp_path / "data" / "im.png", synthetic(3, (128, 160)))
    cmd = [sys.executable, "-m", "napari_jpeg_restore.core.cli", "train", "arcnn", "--threads", "1",
           "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "1000000",
           "--batch", "2", "--patch", "32", "--log-every", "1", "--ckpt-every", "1000000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log lines as they come
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = interrupt_at(proc, proc.stdout, "step=")  # after the first logged step
    out = "".join(lines) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    assert "stopping after this step" in out and (tmp_path / "run" / "model.pt").is_file()
    stopped = load_checkpoint(tmp_path / "run" / "last.pt")["step"]
    assert 1 <= stopped < 1000000
    resumed = subprocess.run([*cmd[:-2], "--resume", "--until", str(stopped + 2)],
                             capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == stopped + 2


@pytest.mark.parametrize("condition", [False, True], ids=["blind", "table-conditioned"])
def test_luma_option_trains_a_chroma_branch_under_the_frozen_gray_restorer(tmp_path, condition):
    """Under a table-conditioned gray restorer (crl-gray) the pairs bring their tables."""
    from napari_jpeg_restore.core.registry import save_weights

    rgb = np.dstack([synthetic(i, (128, 160)) for i in range(3)])
    write_image(tmp_path / "data" / "im.png", rgb)
    torch.manual_seed(0)
    gray = create_model("crl", "lite", 1, condition=condition)
    for p in gray.tail.parameters():
        torch.nn.init.normal_(p, std=0.01)
    save_weights(gray, tmp_path / "gray.pt", {"steps": 5})
    opts = {"stage": "restorer", "data": str(tmp_path / "data"), "channels": 3, "steps": 4, "batch": 2,
            "patch": 32, "lr": 1e-3, "luma": str(tmp_path / "gray.pt")}
    model = load_model(train(TrainOptions(**opts, out=str(tmp_path / "run"))))
    assert type(model).__name__ == "LumaChroma" and model.meta["luma"]["steps"] == 5
    assert model.cfg.condition == condition
    for name, p in gray.state_dict().items():  # the gray restorer stayed as it was
        torch.testing.assert_close(model.luma.state_dict()[name], p, rtol=0, atol=0)
    assert model.chroma.tail.weight.abs().sum() > 0  # the chroma branch learned
    with pytest.raises(ValueError, match="colour restorer's option"):
        TrainOptions(**{**opts, "channels": 1}, out="x")
    save_weights(create_model("crl", "lite", 3), tmp_path / "colour.pt", {})
    with pytest.raises(ValueError, match="not a gray restorer"):
        train(TrainOptions(**{**opts, "luma": str(tmp_path / "colour.pt")}, out=str(tmp_path / "c")))


def test_init_of_a_luma_chroma_model_alone_fine_tunes_all_of_it_but_the_encoder(tmp_path):
    """crl-color fine-tuned (``--init`` without ``--luma``): the gray restorer learns with the
    chroma branch; only its quality encoder stays as it was."""
    from napari_jpeg_restore.core.registry import save_weights

    write_image(tmp_path / "data" / "im.png", np.dstack([synthetic(i, (128, 160)) for i in range(3)]))
    torch.manual_seed(0)
    old = create_model("luma-chroma", "lite", 3)
    for p in (*old.chroma.tail.parameters(), *old.luma.tail.parameters()):
        torch.nn.init.normal_(p, std=0.01)
    save_weights(old, tmp_path / "old.pt", {"steps": 9, "cpu_hours": 1.0})
    model = load_model(train(TrainOptions(stage="restorer", data=str(tmp_path / "data"), channels=3,
                                          steps=3, batch=2, patch=32, lr=1e-3, init=str(tmp_path / "old.pt"),
                                          out=str(tmp_path / "run"))))
    assert type(model).__name__ == "LumaChroma" and model.meta["init"]["steps"] == 9
    for name, p in old.luma.encoder.state_dict().items():
        torch.testing.assert_close(model.luma.encoder.state_dict()[name], p, rtol=0, atol=0)
    for part in ("luma", "chroma"):
        assert not torch.equal(getattr(model, part).tail.weight, getattr(old, part).tail.weight), part
    assert total_cpu_hours(model.meta) == pytest.approx(model.meta["cpu_hours"] + 1.0)
    with pytest.raises(ValueError, match="as it was built"):  # options it cannot honour
        train(TrainOptions(stage="restorer", data=str(tmp_path / "data"), channels=3, steps=1, batch=2,
                           patch=32, init=str(tmp_path / "old.pt"), table_condition=True,
                           out=str(tmp_path / "conditioned")))


def test_init_of_a_luma_chroma_model_brings_its_chroma_branch_under_the_new_luma(tmp_path):
    from napari_jpeg_restore.core.registry import save_weights

    write_image(tmp_path / "data" / "im.png", np.dstack([synthetic(i, (128, 160)) for i in range(3)]))
    torch.manual_seed(0)
    old = create_model("luma-chroma", "lite", 3)
    for p in old.chroma.tail.parameters():
        torch.nn.init.normal_(p, std=0.01)
    save_weights(old, tmp_path / "old.pt", {"steps": 9, "cpu_hours": 1.0})
    gray = create_model("crl", "lite", 1)
    torch.nn.init.normal_(gray.tail.weight, std=0.01)
    save_weights(gray, tmp_path / "gray.pt", {"steps": 5, "cpu_hours": 2.0})
    model = load_model(train(TrainOptions(stage="restorer", data=str(tmp_path / "data"), channels=3,
                                          steps=1, batch=2, patch=32, lr=0.0, luma=str(tmp_path / "gray.pt"),
                                          init=str(tmp_path / "old.pt"), out=str(tmp_path / "run"))))
    for mine, theirs in ((model.luma, gray), (model.chroma, old.chroma)):  # lr 0: as loaded
        for name, p in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[name], p, rtol=0, atol=0)
    assert model.meta["init"]["steps"] == 9 and model.meta["luma"]["steps"] == 5
    assert total_cpu_hours(model.meta) == pytest.approx(model.meta["cpu_hours"] + 3.0)  # branch + gray

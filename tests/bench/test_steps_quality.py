from genlab.bench.steps_quality import measure
from genlab.evaluate import EvalOptions, evaluate_run
from genlab.runs import build_run_config
from genlab.train.trainer import train


def test_each_sampler_setting_scores_as_the_evaluator_does(tmp_path):
    run = tmp_path / "cddim"
    config = build_run_config(
        "cddim", "quick", {"data.task": "facades-synth", "data.image_size": 16, "train.steps": 2,
                           "train.batch_size": 2},
        ["net.base_width=8", "net.channel_mults=[1,2]", "net.timesteps=20", "net.autoguide_at=null",
         "net.autoguidance=1", "train.preview_count=2"],
    )
    train(config, run, progress=False)
    rows = measure(run, [("ddim", 2), ("ddim", 5), ("ddpm", 20)], count=4, batch_size=4, features=())
    assert [(row["sampler"], row["steps"]) for row in rows] == [("ddim", 2), ("ddim", 5), ("ddpm", 20)]
    assert all(row["seconds_per_image"] > 0 for row in rows)
    for row in rows:
        own = evaluate_run(run, EvalOptions(features=(), lpips=False, diversity_inputs=0, limit=4, batch_size=4,
                                            sampler=row["sampler"], steps=row["steps"], progress=False), write=False)
        assert (row["psnr"], row["ssim"]) == (own.score("psnr").value, own.score("ssim").value)
    assert rows[0]["psnr"] != rows[1]["psnr"]

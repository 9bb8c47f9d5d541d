from genlab.bench.steps_quality import measure
from genlab.evaluate import EvalOptions, evaluate_run


def test_each_sampler_setting_scores_as_the_evaluator_does(tiny_cddim, tmp_path):
    run = tiny_cddim(tmp_path / "cddim", "net.autoguide_at=null", "net.autoguidance=1", steps=2)
    rows = measure(run, [("ddim", 2), ("ddim", 5), ("ddpm", 20)], count=4, batch_size=4, features=())
    assert [(row["sampler"], row["steps"]) for row in rows] == [("ddim", 2), ("ddim", 5), ("ddpm", 20)]
    assert all(row["seconds_per_image"] > 0 for row in rows)
    for row in rows:
        own = evaluate_run(run, EvalOptions(features=(), lpips=False, diversity_inputs=0, limit=4, batch_size=4,
                                            sampler=row["sampler"], steps=row["steps"], progress=False), write=False)
        assert (row["psnr"], row["ssim"]) == (own.score("psnr").value, own.score("ssim").value)
    assert rows[0]["psnr"] != rows[1]["psnr"]

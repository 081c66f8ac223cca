"""recsys.progress: the bar helper the library's loops share (driver or Ray task)."""
from recsys.progress import in_ray_worker, progress_bar


def test_progress_bar_yields_every_item_with_or_without_a_bar(capsys):
    assert list(progress_bar(range(4), None)) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""          # no description: no bar
    assert list(progress_bar(iter("abc"), "letters", total=3)) == ["a", "b", "c"]
    assert "letters" in capsys.readouterr().err   # tqdm draws on stderr
    assert not in_ray_worker()                    # here: no Ray task (tests/ray_jobs/common/test_tasks.py: inside one)

from recsys.eval.report import print_metric_table


def test_print_metric_table_prints_one_aligned_row_per_method(capsys):
    text = print_metric_table({"model": {"hr@10": 0.5, "mrr": 0.25}, "MostPop": {"hr@10": 0.1, "mrr": 0.05}},
                              ["hr@10", "mrr"], ["HR@10", "MRR"], name_width=10, width=7)
    lines = text.splitlines()
    assert capsys.readouterr().out.strip() == text.strip()
    assert lines[0].split() == ["HR@10", "MRR"] and lines[1].split() == ["model", "0.5000", "0.2500"]
    assert len({len(line) for line in lines}) == 1

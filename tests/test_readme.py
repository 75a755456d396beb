"""The README's numbers are computed from the stored runs, and stay in step with them."""

from cnnlib import summary


def test_the_readme_results_block_matches_the_stored_runs():
    text = summary.README.read_text()
    head, rest = text.split(summary.START, 1)
    block, tail = rest.split(summary.END, 1)
    assert summary.START + block + summary.END == summary.readme_block(), (
        "README.md's results section is out of date: run `python -m cnnlib readme` (or make refresh)")
    # the paragraph that says which profile and device the numbers come from is generated too, not typed
    assert block.lstrip().startswith("**Read this first:**") and "Read this first" not in head + tail


def test_a_verdict_line_says_when_no_interval_exists_yet():
    from cnnlib.summary import _adjusted

    assert _adjusted(0, "claims", "Welch intervals") == "no interval across seeds yet: a net has one seed"
    assert _adjusted(1, "claims", "Welch intervals") == "Welch intervals across seeds"
    assert _adjusted(3, "rows", "intervals") == ("intervals across seeds, Holm-adjusted across the 3 rows of "
                                                 "notebook 06's table")

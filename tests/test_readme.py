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

"""pytest settings shared by the unit tests and the notebook regression (nbval)."""


def pytest_collectstart(collector):
    # DataFrames are compared through their text/plain form; the HTML twin and
    # warnings on stderr add nothing but noise across library versions.
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "stderr")

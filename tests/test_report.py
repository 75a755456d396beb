"""The HTML report's pages link to each other, not to the notebooks."""

import nbformat
from nbconvert import HTMLExporter

from cnnlib.report import _html


def test_links_between_notebooks_point_at_their_pages():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "See [notebook 06](06_skip_connections.ipynb) and [07](./07_why_skip_connections.ipynb#1.-Lesion-study).")])
    html = _html(nb, HTMLExporter())
    assert 'href="06_skip_connections.html"' in html and 'href="07_why_skip_connections.html#1.-Lesion-study"' in html
    assert ".ipynb" not in html.split("<body", 1)[1]

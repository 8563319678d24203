"""mkdocs hook: the links in a notebook's Markdown cells, written for the repository,
lead to the site's pages once built.

A notebook links to the docs as the repository holds them (`../docs/tools.md` from
notebooks/), which GitHub and Jupyter follow. mkdocs turns such links into page URLs in
Markdown pages, but mkdocs-jupyter renders a notebook with nbconvert, which leaves them
as written: on the site `../docs/tools.md` would lead to notebooks/docs/tools.md. Here a
link is read from where the notebook really lies (docs/notebooks is a link to
../notebooks) and, if it names a page of the site, replaced by that page's URL. Other
links are left as they are (.ci/check_links.py reports those that lead nowhere).
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

# href="PATH.md" or "PATH.ipynb", optionally with #anchor; no scheme, no query.
_HREF = re.compile(r'(\shref=")([^":?#]+\.(?:md|ipynb))(#[^"]*)?"')


def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    notebook_dir = os.path.dirname(os.path.realpath(page.file.abs_src_path))
    docs_dir = os.path.realpath(config["docs_dir"])

    def to_page_url(link: re.Match) -> str:
        target = os.path.normpath(os.path.join(notebook_dir, unquote(link[2])))
        in_docs = os.path.relpath(target, docs_dir).replace(os.sep, "/")
        file = None if in_docs.startswith("../") else files.get_file_from_path(in_docs)
        if file is None or not file.is_documentation_page():
            return link[0]
        return f'{link[1]}{file.url_relative_to(page.file)}{link[3] or ""}"'

    return _HREF.sub(to_page_url, html)

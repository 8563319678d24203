"""Checks the internal links of a built site: every relative href or src names a file that
exists, and every #anchor an element with that id on its target page.

    mkdocs build --strict --site-dir "$site"
    python .ci/check_links.py "$site"

`mkdocs build --strict` checks the links written in Markdown; this reads what the pages
link to once built, including pages mkdocs only converts (the notebook). Links with a
scheme (http:, https:, mailto:, data:, ...) are not fetched. A link that starts with "/"
is read from the site's root. Prints each broken link with the page it is on and exits 1
if there is one; else prints how many links and anchors it checked.
"""

from __future__ import annotations

import os
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

LINK_ATTRIBUTES = ("href", "src")


class _Page(HTMLParser):
    """The ids (and <a name>s) a page defines and the links it holds, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in LINK_ATTRIBUTES:
                self.links.append(value)


def read_page(path: str) -> _Page:
    parser = _Page()
    with open(path, encoding="utf-8", errors="replace") as f:
        parser.feed(f.read())
    parser.close()
    return parser


def html_files(site: str) -> list[str]:
    """Every .html file under `site`, as a path relative to it, sorted."""
    found = []
    for root, _, files in os.walk(site):
        found += [os.path.relpath(os.path.join(root, f), site) for f in files
                  if f.endswith(".html")]
    return sorted(found)


def target_file(site: str, page: str, path: str) -> str | None:
    """The file (relative to `site`) that link path `path` on `page` names, or None if there
    is none; a directory stands for its index.html."""
    if path.startswith("/"):
        joined = os.path.join(site, path.lstrip("/"))
    else:
        joined = os.path.join(site, os.path.dirname(page), path)
    joined = os.path.normpath(joined)
    if os.path.relpath(joined, site).startswith(os.pardir):
        return None  # outside the site
    if os.path.isdir(joined):
        joined = os.path.join(joined, "index.html")
    return os.path.relpath(joined, site) if os.path.isfile(joined) else None


class Checker:
    """Checks links page by page, reading each target page's ids once."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._ids: dict[str, set[str]] = {}
        self.links = 0
        self.anchors = 0
        self.broken: list[str] = []

    def ids(self, page: str) -> set[str]:
        if page not in self._ids:
            self._ids[page] = read_page(os.path.join(self.site, page)).ids
        return self._ids[page]

    def check_page(self, page: str) -> None:
        parsed = read_page(os.path.join(self.site, page))
        self._ids.setdefault(page, parsed.ids)
        for link in parsed.links:
            problem = self.check_link(page, link.strip())
            if problem:
                self.broken.append(f"{page}: {link} ({problem})")

    def check_link(self, page: str, link: str) -> str | None:
        """Why `link` on `page` is broken, or None (also for links it does not check)."""
        parts = urlsplit(link)
        if parts.scheme or parts.netloc or not link:
            return None  # external (http:, mailto:, data:, //host/...) or empty
        self.links += 1
        target = page
        if parts.path:
            target = target_file(self.site, page, unquote(parts.path))
            if target is None:
                return "no such file"
        if not parts.fragment:
            return None
        self.anchors += 1
        if not target.endswith(".html"):
            return f"an anchor into {target}, which is not a page"
        if unquote(parts.fragment) not in self.ids(target):
            return f"no id {unquote(parts.fragment)!r} on {target}"
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print(f"usage: {argv[0]} SITE_DIRECTORY (a built site)", file=sys.stderr)
        return 2
    checker = Checker(argv[1])
    pages = html_files(argv[1])
    for page in pages:
        checker.check_page(page)
    for line in checker.broken:
        print(f"broken: {line}")
    summary = (f"{checker.links} internal links ({checker.anchors} with an anchor) "
               f"on {len(pages)} pages")
    if checker.broken:
        print(f"{len(checker.broken)} broken of {summary}")
        return 1
    print(f"checked {summary}: none broken")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

""".ci/check_links.py, the link check CI runs over the built docs site, on tiny sites."""

CHECK = ".ci/check_links"


def _site(root, pages):
    """A built site under `root`: {relative path: body HTML}."""
    for path, body in pages.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(f"<!doctype html><html><body>{body}</body></html>")
    return str(root)


GOOD = {
    "index.html": '<h1 id="top">Home</h1><a href="guide/">guide</a> '
                  '<a href="guide/index.html#setup">setup</a> <a href="#top">top</a> '
                  '<img src="img/logo.png">',
    "guide/index.html": '<h2 id="setup">Setup</h2><a href="../">home</a> '
                        '<a href="../index.html#top">home, top</a>',
    "img/logo.png": "",
}


def test_good_links_and_anchors_pass(tmp_path, scripts):
    result = scripts.run(CHECK, _site(tmp_path, GOOD))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 6 internal links (3 with an anchor) on 2 pages: none broken" in result.stdout


def test_a_missing_page_fails_naming_the_page_it_is_on(tmp_path, scripts):
    pages = {**GOOD, "guide/index.html": GOOD["guide/index.html"] + '<a href="../api/">api</a>'}
    result = scripts.run(CHECK, _site(tmp_path, pages))
    assert result.returncode == 1
    assert "broken: guide/index.html: ../api/ (no such file)" in result.stdout
    assert "1 broken of 7 internal links" in result.stdout


def test_a_missing_anchor_fails(tmp_path, scripts):
    pages = {**GOOD, "index.html": GOOD["index.html"] + '<a href="guide/#install">x</a>'
                                                       '<a href="#bottom">y</a>'}
    result = scripts.run(CHECK, _site(tmp_path, pages))
    assert result.returncode == 1
    assert "broken: index.html: guide/#install (no id 'install' on guide/index.html)" \
        in result.stdout
    assert "broken: index.html: #bottom (no id 'bottom' on index.html)" in result.stdout


def test_external_links_are_not_checked(tmp_path, scripts):
    external = ('<a href="https://example.invalid/missing">a</a> '
                '<a href="http://example.invalid/">b</a> <a href="mailto:x@example.invalid">c</a>')
    pages = {**GOOD, "index.html": GOOD["index.html"] + external}
    result = scripts.run(CHECK, _site(tmp_path, pages))
    assert result.returncode == 0, result.stdout
    assert "checked 6 internal links" in result.stdout

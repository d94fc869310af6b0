"""MkDocs hook: the site's home page is README.md, its links made relative to docs/."""

import pathlib


def on_page_markdown(markdown, page, config, files):
  del files
  if page.file.src_uri != "index.md":
    return markdown
  readme = pathlib.Path(config.config_file_path).parent / "README.md"
  return readme.read_text(encoding="utf-8").replace("](docs/", "](")

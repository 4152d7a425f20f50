"""MkDocs hooks (mkdocs.yml's ``hooks``): the tutorial notebook, which lives in notebooks/ beside
its percent script, joins the site as the page ``notebooks/tutorial/`` without a copy in docs/."""

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent


@event_priority(100)  # before mkdocs-jupyter's own on_files turns .ipynb files into pages
def on_files(files, config):
    files.append(File("notebooks/tutorial.ipynb", src_dir=str(ROOT), dest_dir=config.site_dir,
                      use_directory_urls=config.use_directory_urls))
    return files

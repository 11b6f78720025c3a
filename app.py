"""Gradio app entry point: `python app.py` (same as `anomaly-vlm app`; options: `python app.py --help`)."""

import sys

from anomaly_vlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))

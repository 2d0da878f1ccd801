"""The baseline for bench/subscribe.py: a bare Flask endpoint, nothing else."""

from flask import Flask

app = Flask(__name__)


@app.route("/", methods=["GET", "POST"])
def index():
    return "ok"

"""The called service: GET /inventory/<item>. Uninstrumented code, like storefront.py."""
import os

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/inventory/<int:item>")
def inventory(item):
    return jsonify(item=item, stock=7)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), use_reloader=False)

"""The calling service: GET /checkout calls the inventory service over HTTP.

No tracing code here: `opentelemetry-instrument` instruments Flask and requests, and the
OTEL_* environment points the exporter at tracepipe's gateway.
"""
import os

import requests
from flask import Flask, jsonify

app = Flask(__name__)
INVENTORY = os.environ["INVENTORY_URL"]


@app.get("/checkout")
def checkout():
    reply = requests.get(f"{INVENTORY}/inventory/42", timeout=5)
    return jsonify(ok=reply.ok, stock=reply.json()["stock"])


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), use_reloader=False)

"""A Flask app whose state lives in memory: a request counter and the time the process started.

Launched microVMs continue from the snapshot taken at build time, so `started` is the same in every
one of them and `requests` starts from what the build saw.
"""
import os
import socket
import time

from flask import Flask, jsonify

app = Flask(__name__)
STARTED = time.time()
requests_served = 0


@app.route('/')
def hello():
    global requests_served
    requests_served += 1
    return jsonify(
        message='Hello from Flask in a Hearth microVM',
        hostname=socket.gethostname(),
        requests=requests_served,
        process_started=STARTED,
        pid=os.getpid(),
    )


@app.route('/healthz')
def healthz():
    return 'ok\n'

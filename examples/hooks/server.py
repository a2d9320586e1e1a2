"""Implements Hearth's six hooks (POST /hearth/runtime/v1/<hook> on port 9000) and an app on 8080.

- ready: answers 503 until the app has finished its (slow) initialisation, then 200; the build
  snapshots right after.
- validate: checks the app answers, on a microVM restored from the snapshot.
- run: per-VM initialisation after launch: records the microvmId and the runHookPayload, and makes
  a secret from fresh randomness. Secrets must be made here, never at build time: everything made
  before the snapshot is shared by every microVM launched from it.
- resume / suspend / terminate: counted, so the app can show them.
"""
import http.server
import json
import os
import secrets
import threading
import time

state = {
    'initialised': False,
    'built_at': time.time(),       # baked into the snapshot: the same in every microVM
    'build_nonce': secrets.token_hex(8),  # likewise shared: do not use it as a secret
    'microvm_id': None,
    'payload': None,
    'secret': None,                # made in `run`: unique per microVM
    'hooks': {h: 0 for h in ('ready', 'validate', 'run', 'resume', 'suspend', 'terminate')},
}


def slow_init():
    time.sleep(2)  # stands for loading a model, warming a cache, ...
    state['initialised'] = True


class Hooks(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def reply(self, status, obj):
        body = (json.dumps(obj) + '\n').encode()
        self.send_response(status)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get('content-length') or 0)
        body = json.loads(self.rfile.read(length) or b'{}')
        prefix = '/hearth/runtime/v1/'
        if not self.path.startswith(prefix):
            return self.reply(404, {'error': 'unknown path'})
        hook = self.path[len(prefix):]
        if hook not in state['hooks']:
            return self.reply(404, {'error': 'unknown hook'})
        state['hooks'][hook] += 1
        print('hook:', hook, flush=True)
        if hook == 'ready':
            return self.reply(200 if state['initialised'] else 503, {'initialised': state['initialised']})
        if hook == 'validate':
            return self.reply(200 if state['initialised'] else 500, {'ok': state['initialised']})
        if hook == 'run':
            state['microvm_id'] = body.get('microvmId')
            state['payload'] = body.get('runHookPayload')
            state['secret'] = secrets.token_hex(16)
        return self.reply(200, {'ok': True})

    def log_message(self, *args):
        pass


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        view = {k: v for k, v in state.items()}
        view['random_now'] = os.urandom(8).hex()
        body = (json.dumps(view) + '\n').encode()
        self.send_response(200)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


threading.Thread(target=slow_init, daemon=True).start()
threading.Thread(target=http.server.ThreadingHTTPServer(('0.0.0.0', 9000), Hooks).serve_forever, daemon=True).start()
print('hooks on 9000, app on 8080', flush=True)
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), App).serve_forever()

import time
from tests.harness import refused, settings_env

def test_refused_guard(tmp_path):
    env = settings_env(tmp_path, BRIDGE_PORT="58411")
    t = time.monotonic()
    done = refused(env, "serve", within=2)
    print(done.returncode, done.stderr[-300:], time.monotonic() - t)

def test_refused_guard_worker(tmp_path):
    env = settings_env(tmp_path)
    done = refused(env, "worker", within=2)
    print(done.returncode, done.stderr[-300:])

# Shared helpers for scripts/*: paths, tool locations, logging. Sourced, not run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WRANGLER_SEND_METRICS=false
export CI="${CI:-true}"   # wrangler: never prompt

say()  { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# The wasm-bindgen version pinned in Cargo.lock; the CLI must match it exactly.
wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

# worker-build downloads its helpers from GitHub, which is unreachable here: point it at
# local ones (the wasm-bindgen CLI from crates.io, esbuild and wasm-opt from npm).
export_build_tools() {
    WASM_BINDGEN_BIN="$(command -v wasm-bindgen || true)"
    [ -n "$WASM_BINDGEN_BIN" ] || die "wasm-bindgen CLI not found; run scripts/setup"
    export WASM_BINDGEN_BIN
    export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
    export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
    [ -x "$ESBUILD_BIN" ] || die "esbuild not found in node_modules; run scripts/setup"
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

#!/bin/sh
# /usr/bin/triage-node: the node's binary with the libraries the package may carry (libtorch,
# ONNX Runtime) on its library path; without them it uses the libtorch it was built against.
LD_LIBRARY_PATH="/usr/lib/triage-node/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -e /usr/lib/triage-node/lib/libonnxruntime.so ]; then
    ORT_DYLIB_PATH=/usr/lib/triage-node/lib/libonnxruntime.so
    export ORT_DYLIB_PATH
fi
exec /usr/lib/triage-node/triage-node "$@"

#!/bin/sh
# Generates the Python stubs of proofgate's gRPC API from proto/ into the directory given
# (default: examples/python/gen, git-ignored). Needs protoc >= 3.15 (proto3 optional) and the
# gRPC Python plugin: on Debian/Ubuntu `apt-get install protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
# python3-grpcio` (or `pip install grpcio-tools` and use `python3 -m grpc_tools.protoc`).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
out="${1:-$here/gen}"
mkdir -p "$out"
plugin="$(command -v grpc_python_plugin)"
protoc -I "$root/proto" --python_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" "$root"/proto/proofgate/v1/*.proto
echo "$out"

"""Checks the crate's encodings against Google's protoc, field for field.

Usage: python protoc_compat.py FIXTURE_DIR

FIXTURE_DIR holds what `cargo run --example protoc_fixtures` wrote: NAME.bin
files and manifest.json (message type and expected value of each). For every
fixture this script:

1. runs `python -m grpc_tools.protoc --decode=TYPE -I proto proto/ipc.proto`
   (Google's protoc, bundled by grpcio-tools) on the bytes;
2. parses protoc's text output against the same schema (an unknown field or a
   type mismatch fails here) and compares every field, presence of optional
   fields included, with the expected value (doubles bit for bit);
3. runs `protoc --encode` on protoc's own text and checks it gives back the
   crate's bytes exactly (except for fixtures marked `canonical_order:
   false`, such as a frame of pre-encoded records, whose fields are in
   another order than protoc writes them).

Exits non-zero, listing every mismatch, if anything differs.
"""

import json
import math
import pathlib
import struct
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = "proto/ipc.proto"
SEED_MESSAGES = {
    "DetectionTask",
    "DetectionResult",
    "ProcessRecord",
    "ProcessFilter",
    "HashCheck",
    "HashResult",
}


def protoc(*args, stdin=b""):
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", "proto", *args]
    done = subprocess.run(cmd, cwd=ROOT, input=stdin, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(
            f"protoc {' '.join(args)} failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace')}"
        )
    return done.stdout


def is_repeated(field):
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return flag
    return field.label == field.LABEL_REPEATED


def to_plain(message):
    """The message as serde would write it: every field, None if absent."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if is_repeated(field):
            out[field.name] = [to_plain(v) if field.message_type else v for v in value]
        elif field.message_type is not None:
            out[field.name] = to_plain(value) if message.HasField(field.name) else None
        elif field.has_presence:
            out[field.name] = value if message.HasField(field.name) else None
        else:
            out[field.name] = value
    return out


def compare(path, got, want, problems):
    if isinstance(want, dict) or isinstance(got, dict):
        if not (isinstance(want, dict) and isinstance(got, dict)):
            problems.append(f"{path}: protoc has {got!r}, expected {want!r}")
            return
        for key in sorted(set(got) | set(want)):
            if key not in got or key not in want:
                problems.append(f"{path}.{key}: field present on one side only")
                continue
            compare(f"{path}.{key}", got[key], want[key], problems)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            problems.append(f"{path}: protoc has {got!r}, expected {want!r}")
            return
        for i, (g, w) in enumerate(zip(got, want)):
            compare(f"{path}[{i}]", g, w, problems)
    elif isinstance(got, float) or isinstance(want, float):
        bits = lambda x: struct.pack("<d", float(x))
        if not (isinstance(got, float) and bits(got) == bits(want)):
            problems.append(f"{path}: protoc has {got!r}, expected {want!r} (bitwise)")
    elif type(got) is not type(want) or got != want:
        problems.append(f"{path}: protoc has {got!r}, expected {want!r}")


def main():
    fixtures = pathlib.Path(sys.argv[1]).resolve()
    manifest = json.loads((fixtures / "manifest.json").read_text())

    with tempfile.TemporaryDirectory() as gen:
        protoc(f"--python_out={gen}", SCHEMA)
        sys.path.insert(0, gen)
        import ipc_pb2  # noqa: E402  (generated just above)
        from google.protobuf import text_format

        problems = []
        seen_types = set()
        task_types = set()
        for fixture in manifest:
            name, full_type = fixture["name"], fixture["message"]
            short = full_type.rsplit(".", 1)[-1]
            seen_types.add(short)
            data = (fixtures / fixture["file"]).read_bytes()

            before = len(problems)
            message = getattr(ipc_pb2, short)()
            try:
                text = protoc(f"--decode={full_type}", SCHEMA, stdin=data)
                text_format.Parse(text.decode("utf-8"), message)
                compare(name, to_plain(message), fixture["expected"], problems)
                again = protoc(f"--encode={full_type}", SCHEMA, stdin=text)
                # Pre-encoded records carry their fields out of tag order:
                # protoc re-encodes them in its own.
                if again != data and fixture.get("canonical_order", True):
                    problems.append(
                        f"{name}: protoc re-encodes to different bytes:\n"
                        f"    ours   {data.hex()}\n    protoc {again.hex()}"
                    )
                if short == "DetectionTask":
                    task_types.add(message.task_type)
            except RuntimeError as e:
                problems.append(f"{name}: {e}")
            except text_format.ParseError as e:
                problems.append(f"{name}: protoc's output does not fit the schema: {e}\n{text.decode(errors='replace')}")
            status = "ok" if len(problems) == before else "MISMATCH"
            print(f"{status:8} {name:20} {short:16} {len(data):5} bytes")

        if seen_types != SEED_MESSAGES:
            problems.append(f"fixtures cover {sorted(seen_types)}, not every seed message {sorted(SEED_MESSAGES)}")
        if task_types != {0, 1, 2, 3}:
            problems.append(f"tasks cover task types {sorted(task_types)}, not all four")

    if problems:
        print(f"\nprotoc disagrees with the crate ({len(problems)} problems):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        sys.exit(1)
    print(f"{len(manifest)} fixtures decode field for field with protoc and re-encode to the same bytes")


if __name__ == "__main__":
    main()

"""Benchmark: `crm companies import` of the national Brønnøysund bulk download.

    .venv/bin/python bench/brreg_import.py [--units 1100000] [--ours 2000] [--database-url URL]

Writes (once, then reuses) a synthetic `enheter_alle.json.gz` of N units in the register's
shape (gzip, one pretty-printed JSON array, about 0.7 % of units in the cluster's seven
municipalities), seeds a scratch database with `--ours` companies found in the file, then
times in the same run:

- the baseline: the streaming parse alone (ijson's C backend over the gzip file, every
  unit built as a dict and dropped), in a process of its own, as a caller runs it and
  again with the garbage collector off (as the import streams);
- `crm companies import FILE` (whole command: app start, stream, plan, write, commit) —
  once updating ours only, once also adding prospects with --new-in-municipalities —
  each in a process of its own, with its peak memory (max RSS).
"""

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLUSTER = ("3401", "3414", "3415", "3416", "3417", "3418", "3419")
API = "https://data.brreg.no/enhetsregisteret/api"
ELSEWHERE = ("0301", "4601", "5001", "1103", "3301", "3201", "3403", "3405", "1804", "5501")


def orgnr(n: int) -> str | None:
    from crm.members.normalize import make_orgnr

    return make_orgnr(f"{8 + n % 2}{n:07d}")


def unit(number: str, index: int, rng: random.Random) -> dict:
    municipality = rng.choice(CLUSTER) if rng.random() < 0.007 else rng.choice(ELSEWHERE)
    lines = [f"Industrivegen {index % 200}"] + ([None, None, ""] if index % 7 == 0 else [])
    data = {
        "organisasjonsnummer": number,
        "navn": f"BEDRIFT NUMMER {index} AS",
        "organisasjonsform": {
            "kode": "AS",
            "beskrivelse": "Aksjeselskap",
            "_links": {"self": {"href": f"{API}/organisasjonsformer/AS"}},
        },
        "hjemmeside": f"www.bedrift{index}.no" if index % 3 == 0 else None,
        "postadresse": {
            "land": "Norge",
            "postnummer": "0101",
            "poststed": "OSLO",
            "adresse": ["Postboks 1"],
            "kommune": "OSLO",
            "kommunenummer": "0301",
        },
        "registreringsdatoEnhetsregisteret": "2001-05-01",
        "registrertIMvaregisteret": index % 2 == 0,
        "naeringskode1": {"kode": "25.110", "beskrivelse": "Produksjon av metallkonstruksjoner"},
        "harRegistrertAntallAnsatte": index % 4 != 0,
        "forretningsadresse": {
            "land": "Norge",
            "landkode": "NO",
            "postnummer": "2212",
            "poststed": "STED",
            "adresse": lines,
            "kommune": "KOMMUNE",
            "kommunenummer": municipality,
        },
        "stiftelsesdato": "2001-04-01",
        "institusjonellSektorkode": {"kode": "2100", "beskrivelse": "Private aksjeselskaper mv."},
        "registrertIForetaksregisteret": True,
        "registrertIStiftelsesregisteret": False,
        "registrertIFrivillighetsregisteret": False,
        "sisteInnsendteAarsregnskap": "2025",
        "konkurs": index % 97 == 0,
        "underAvvikling": False,
        "underTvangsavviklingEllerTvangsopplosning": index % 211 == 0,
        "maalform": "Bokmål",
        "_links": {"self": {"href": f"{API}/enheter/{number}"}},
    }
    if index % 4 != 0:
        data["antallAnsatte"] = rng.randrange(1, 400)
    return data


def write_file(path: Path, count: int) -> list[str]:
    """The file (kept between runs) and the organisation numbers in it."""
    rng = random.Random(20261206)
    numbers = [n for n in (orgnr(i) for i in range(1_000_000, 1_000_000 + count * 2)) if n]
    numbers = numbers[:count]
    if path.exists():
        return numbers
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as fh:
        fh.write("[ ")
        for index, number in enumerate(numbers):
            if index:
                fh.write(", ")
            fh.write(json.dumps(unit(number, index, rng), indent=2, ensure_ascii=False))
        fh.write(" ]")
    partial.rename(path)
    return numbers


PARSE_ONLY = """
import gc, gzip, sys, ijson
if sys.argv[2:] == ["gc-off"]:
    gc.disable()
backend = ijson.get_backend("yajl2_c")
n = 0
for _unit in backend.items(gzip.open(sys.argv[1], "rb"), "item"):
    n += 1
print(n)
"""


def timed(args: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, the child's own peak memory in MB (its max RSS), its output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(args, env=env, stdout=out, stderr=err, cwd=ROOT)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if status != 0:
        sys.exit(f"failed: {' '.join(args)}\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def seed(env: dict, numbers: list[str], ours: int, workdir: Path) -> None:
    chosen = random.Random(7).sample(numbers, ours)
    (workdir / "ours.json").write_text(json.dumps(chosen))
    code = f"""
from crm import create_app
from crm.extensions import db
from crm.members.models import Company
from sqlalchemy import text
app = create_app()
with app.app_context():
    db.drop_all()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    from flask_migrate import upgrade
    upgrade()
    import json
    chosen = json.load(open({str(workdir / "ours.json")!r}))
    db.session.add_all(
        Company(orgnr=n, name=f"Medlem {{i}} AS", membership_status="member", employees=10)
        for i, n in enumerate(chosen)
    )
    db.session.commit()
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1_100_000)
    parser.add_argument("--ours", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "klynge-bench"))
    args = parser.parse_args()

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"enheter_alle_{args.units}.json.gz"
    started = time.perf_counter()
    fresh = not path.exists()
    numbers = write_file(path, args.units)
    if fresh:
        print(f"wrote {path} in {time.perf_counter() - started:.1f} s")
    print(f"file: {args.units:,} units, {path.stat().st_size / 2**20:.0f} MB gzip")

    workdir = Path(tempfile.mkdtemp(prefix="klynge-brreg-"))
    env = dict(
        os.environ,
        DATABASE_URL=args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}",
        CRM_INSTANCE_PATH=str(workdir / "instance"),
        SECRET_KEY="bench",
        PYTHONPATH=str(ROOT),
    )
    env.pop("REDIS_URL", None)
    seed(env, numbers, args.ours, workdir)
    database = "PostgreSQL" if args.database_url.startswith("postgresql") else "SQLite"

    crm = [str(Path(sys.executable).parent / "crm"), "companies", "import", str(path)]
    parse_s, parse_mb, out = timed([sys.executable, "-c", PARSE_ONLY, str(path)], env)
    assert int(out.strip()) == args.units
    bare_s, bare_mb, _ = timed([sys.executable, "-c", PARSE_ONLY, str(path), "gc-off"], env)
    update_s, update_mb, out = timed(crm, env)
    assert f"{args.units} units read, {args.ours} for us" in out, out[-500:]
    adding_s, adding_mb, out = timed(crm + ["--new-in-municipalities", ",".join(CLUSTER)], env)
    created = next(line for line in out.splitlines() if line.startswith("Created:"))

    print(f"database: {database}; {args.ours:,} of our companies in the file")
    print(f"streaming parse alone (baseline): {parse_s:6.1f} s  peak {parse_mb:5.0f} MB")
    print(f"  the same, garbage collector off: {bare_s:6.1f} s  peak {bare_mb:5.0f} MB")
    print(
        f"import, updating ours:            {update_s:6.1f} s  peak {update_mb:5.0f} MB  "
        f"{update_s / parse_s:.2f}x the parse ({update_s / bare_s:.2f}x with its GC off)"
    )
    print(
        f"import, + new in the 7 municipalities: {adding_s:6.1f} s  peak {adding_mb:5.0f} MB  "
        f"{adding_s / parse_s:.2f}x the parse ({adding_s / bare_s:.2f}x with its GC off; "
        f"{created})"
    )


if __name__ == "__main__":
    main()

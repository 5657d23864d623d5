#!/usr/bin/env bash
# First run on a fresh machine: install everything into ./.venv, download the face models once,
# and restore the sample photo shipped in samples/ into ./out/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
R=.venv/bin/restora
home=$(.venv/bin/python -c 'from restora.config import Settings; print(Settings().home)')

cat >&2 <<MSG

Model files must be downloaded first (once, about 1 GB, SHA-256 checked) into $home/models:
GFPGAN v1.4, CodeFormer, RetinaFace, ParseNet and Real-ESRGAN x2 (the 'upscale-enhance' bundle).
No network here? The next lines say which files to fetch by hand and how to import them.
MSG
"$R" models pull upscale-enhance

"$R" enhance-faces samples/astronaut.jpg -o out/
cat >&2 <<MSG

Done: the restored photo and its WebP preview are in out/ (the line above names them).
Your own photos: $R enhance-faces PHOTO... -o out/   ·   old photos: $R restore-photo PHOTO... -o out/
Web page and HTTP API: $R serve, then open http://127.0.0.1:8000
Everything runs on this machine with embedded defaults: the job store is SQLite
($home/service/jobs.db), results stay on local disk ($home/service/jobs), and jobs run
in an in-process worker; no database server, queue or cloud service is needed.
MSG

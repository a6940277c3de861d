#!/usr/bin/env bash
# The API contract, fuzzed: schemathesis (4.x, pinned) against the gateway's /openapi.json, with
# every check (`--checks all`) and every phase (examples, coverage, fuzzing, stateful), once for
# each kind of caller: a USER, a VENDOR_MANAGER (with a vendor and a product of its own) and the
# MASTER. Exits non-zero on any failure.
#   scripts/schemathesis.sh                 a private shop (like scripts/soak.sh): its own run dir
#                                           (.work/schemathesis), topic and Redis prefixes and
#                                           ports, debug binaries (PICKPLE_PROFILE=release for
#                                           release), stopped afterwards
#   scripts/schemathesis.sh URL             a shop already running at URL (e.g.
#                                           http://127.0.0.1:8080 after up.sh); the MASTER's
#                                           password from $PICKPLE_RUN_DIR/master.password or
#                                           .work/master.password. Its per-address rate limits
#                                           must be raised as below, or sign-ups and sign-ins
#                                           answer 429 (documented, so no failure, but fewer
#                                           requests reach the handlers).
# PICKPLE_SCHEMATHESIS_URL works as URL. Settings: PICKPLE_SCHEMATHESIS_EXAMPLES (examples per
# operation and phase, default 10), PICKPLE_SCHEMATHESIS_SEED, PICKPLE_SCHEMATHESIS_ROLES (default
# "USER VENDOR_MANAGER MASTER"); extra arguments go to `schemathesis run`. Reports (JUnit,
# NDJSON) in the run dir's schemathesis/ folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"

version=4.32.5
venv=${XDG_CACHE_HOME:-$HOME/.cache}/pickple/schemathesis-$version
url=${PICKPLE_SCHEMATHESIS_URL:-}
if [ $# -gt 0 ] && [[ $1 == http://* || $1 == https://* ]]; then url=$1; shift; fi
examples=${PICKPLE_SCHEMATHESIS_EXAMPLES:-10}
roles=${PICKPLE_SCHEMATHESIS_ROLES:-USER VENDOR_MANAGER MASTER}

# The virtualenv, once.
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  log "installing schemathesis $version in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

if [ -z "$url" ]; then
  # A private shop, as scripts/soak.sh starts one.
  run=${PICKPLE_SCHEMATHESIS_DIR:-$root/.work/schemathesis}
  # schemathesis signs in hundreds of times as one account and places many orders as one user:
  # the per-account and per-user limits are raised too (429 is documented on every limited
  # route; these keep most requests reaching the handlers).
  export PICKPLE_LIMIT_SIGN_IN_ACCOUNT=${PICKPLE_LIMIT_SIGN_IN_ACCOUNT:-60000/10000}
  export PICKPLE_LIMIT_PLACE_USER=${PICKPLE_LIMIT_PLACE_USER:-60000/10000}
  private_shop st "$run" "${PICKPLE_SCHEMATHESIS_GATEWAY_PORT:-18090}" \
    "${PICKPLE_SCHEMATHESIS_METRICS_BASE_PORT:-19201}"
  export PICKPLE_SCALE=${PICKPLE_SCALE:-notification=1}
  # Generated reads long-poll with any `wait` the spec allows; the server caps it at this (30 s
  # by default), so a run is not spent waiting on views that never change.
  export PICKPLE_MAX_WAIT_SECS=${PICKPLE_MAX_WAIT_SECS:-1}
  "$here/up.sh"
  url=http://$PICKPLE_GATEWAY_ADDR
  password_file=$run/master.password
else
  url=${url%/}
  run=${PICKPLE_RUN_DIR:-${PICKPLE_WORK:-$root/.work}}
  password_file=$run/master.password
fi
[ -s "$password_file" ] || die "no MASTER password in $password_file"
out=$run/schemathesis
mkdir -p "$out"

# The SMTP sink's maildir (scripts/services.sh), where the shop's notification app delivers the
# sign-ups' confirmation codes: the callers read theirs there.
maildir=${PICKPLE_MAILDIR:-${PICKPLE_WORK:-$root/.work}/mail}
[ -d "$maildir/new" ] || die "no maildir at $maildir (the SMTP sink's; set PICKPLE_MAILDIR)"

# Callers, through the API: sign up (the status link of the 202's location carries the signer's
# token), confirm the address with the code mailed to it, wait until ACTIVE, sign in. The
# VENDOR_MANAGER creates a vendor and a product, so the operations on a vendor's things have one
# to work on. Prints shell assignments.
log "schemathesis: callers on $url"
eval "$(MASTER_PASSWORD=$(cat "$password_file") MAILDIR=$maildir "$venv/bin/python" - "$url" <<'PY'
import email, email.utils, os, re, secrets, shlex, sys, time
import requests

base = sys.argv[1] + "/api/v1"
s = requests.Session()
maildir = os.environ["MAILDIR"]
# How long a mailed code works (processors/domain/src/user.rs): its mail's Message-ID,
# <{user_id}.confirm-{expires_at}@pickple.local>, says until when.
CONFIRMATION_TTL_MS = 24 * 3600 * 1000
skipped = set()  # mail files that are no confirmation to a caller of this run

def call(method, path, expect, **kw):
    for _ in range(50):
        r = s.request(method, base + path, timeout=40, **kw)
        if r.status_code == 429:
            time.sleep(float(r.headers.get("retry-after", "1")))
            continue
        if r.status_code != expect:
            sys.exit(f"{method} {path}: {r.status_code} {r.text}")
        return r
    sys.exit(f"{method} {path}: still rate-limited")

def sign_in(username, password):
    r = call("POST", "/auth/sign-in", 200, json={"username": username, "password": password})
    return r.json()["access_token"]

def mailed_code(address, sent_at_ms):
    """The code of the confirmation mail to `address`, once the notification app has sent it
    (older mails to the address, whose codes expire before this sign-up's, are not ours)."""
    not_before = sent_at_ms + CONFIRMATION_TTL_MS - 60_000
    needle = address.lower().encode()
    deadline = time.time() + 60
    while time.time() < deadline:
        found = []
        for sub in ("new", "cur"):
            folder = os.path.join(maildir, sub)
            for name in os.listdir(folder):
                key = name.split(":")[0]
                if key in skipped:
                    continue
                try:
                    with open(os.path.join(folder, name), "rb") as f:
                        data = f.read()
                except FileNotFoundError:  # moved to cur/ meanwhile
                    continue
                if needle not in data.lower():
                    skipped.add(key)
                    continue
                msg = email.message_from_bytes(data)
                ids = re.fullmatch(r"\s*<?[^@<>]*\.confirm-(\d+)@[^>]*>?\s*", msg.get("Message-ID", ""))
                if email.utils.parseaddr(msg.get("To", ""))[1].lower() != address.lower() or not ids:
                    skipped.add(key)
                    continue
                # Quoted-printable (a soft line break cuts the code's long line) or plain.
                body = msg.get_payload(decode=True).decode("utf-8", "replace")
                code = re.search(r"Confirmation code:\s*([0-9a-fA-F]+)", body)
                if code and int(ids.group(1)) >= not_before:
                    found.append((int(ids.group(1)), code.group(1)))
        if found:
            return max(found)[1]
        time.sleep(0.25)
    sys.exit(f"no confirmation mail to {address} in {maildir} within 60 s (is the notification app running?)")

def confirm(username, code):
    # The mail can come before the views sink has written the user's view: 404 until then.
    for _ in range(150):
        r = s.post(base + "/auth/confirm-email", json={"username": username, "code": code}, timeout=40)
        if r.status_code == 429:
            time.sleep(float(r.headers.get("retry-after", "1")))
        elif r.status_code == 404:
            time.sleep(0.2)
        elif r.status_code == 202:
            return
        else:
            sys.exit(f"POST /auth/confirm-email for {username}: {r.status_code} {r.text}")
    sys.exit(f"POST /auth/confirm-email for {username}: never accepted")

def sign_up(role):
    username = "st" + secrets.token_hex(4)
    password = secrets.token_urlsafe(12)
    address = f"{username}@example.com"
    sent_at_ms = int(time.time() * 1000)
    r = call("POST", "/auth/sign-up", 202, json={"username": username, "nickname": "fuzz " + role.lower(),
             "email": address, "password": password, "role": role})
    location = r.headers["location"]
    # PENDING until the code mailed to the address comes back.
    confirm(username, mailed_code(address, sent_at_ms))
    for _ in range(30):
        v = call("GET", location.removeprefix("/api/v1") + "&wait=10&status=ACTIVE", 200).json()
        if v["status"] == "ACTIVE":
            return username, sign_in(username, password)
        if v["status"] != "PENDING":
            sys.exit(f"sign-up of {username}: {v}")
    sys.exit(f"sign-up of {username} never became ACTIVE")

def wait_view(path, token):
    for _ in range(30):
        r = s.get(base + path + "?wait=10", headers={"authorization": f"Bearer {token}"}, timeout=40)
        if r.status_code == 200:
            return r.json()
        time.sleep(0.5)
    sys.exit(f"{path} never appeared")

user, user_token = sign_up("USER")
_, spare_token = sign_up("USER")
manager, manager_token = sign_up("VENDOR_MANAGER")
auth = {"authorization": f"Bearer {manager_token}"}
vendor = call("POST", "/vendors", 202, json={"name": "Fuzz vendor"}, headers=auth).json()["id"]
wait_view(f"/vendors/{vendor}", manager_token)
product = call("POST", "/products", 202, headers=auth, json={"vendor_id": vendor,
               "name": "Fuzz product", "description": "for schemathesis", "price": 1000}).json()["id"]
wait_view(f"/products/{product}", manager_token)
call("PUT", f"/products/{product}/stock", 202, headers=auth, json={"quantity": 1000})
master_token = sign_in("master", os.environ["MASTER_PASSWORD"])
for name, value in [("USER_NAME", user), ("USER_TOKEN", user_token), ("VENDOR_MANAGER_NAME", manager),
                    ("VENDOR_MANAGER_TOKEN", manager_token), ("MASTER_TOKEN", master_token), ("SPARE_TOKEN", spare_token),
                    ("VENDOR_ID", vendor), ("PRODUCT_ID", product)]:
    print(f"{name}={shlex.quote(value)}")
PY
)"
log "schemathesis: USER $USER_NAME, VENDOR_MANAGER $VENDOR_MANAGER_NAME (vendor $VENDOR_ID, product $PRODUCT_ID), MASTER master"

# Each role's run: every check and phase, a bounded number of examples. Two checks are left out,
# both because commands are asynchronous here (README, "Guarantees a client sees"): a create or
# a delete answers 202 once its command is queued, and the processor applies it later.
# ensure_resource_availability wants the created entity readable at once (it is a 404 until
# the views show it, which a client waits for with ?wait=); use_after_free wants a deleted
# entity gone at once (its view stays, marked `deleted: true`, for its manager and MASTER).
# Access tokens live 15 minutes, well beyond a role's run. The operations that end the caller's tokens (sign-out,
# deleting or changing the own account: a new password voids every token) would turn the rest
# of a role's run into 401s, so they run last, as a spare USER of their own ("SPARE").
# Deleting another account (delete_user, MASTER only) runs there too, never as MASTER: the
# MASTER's run lists the users (GET /users) and would delete the run's own accounts, turning
# the other roles' calls into 401s; as the spare USER it is fuzzed for its 401s and 403s.
# One worker: with two, hypothesis's lambda descriptions parse source in threads and CPython
# 3.11 fails now and then ("AST constructor recursion depth mismatch"), an error of the tool.
status=0
started=$SECONDS
enders=(--exclude-operation-id sign_out --exclude-operation-id delete_me --exclude-operation-id update_me --exclude-operation-id delete_user)
for role in $roles SPARE; do
  token_var=${role}_TOKEN
  if [ "$role" = SPARE ]; then
    selection=(--include-operation-id sign_out --include-operation-id delete_me --include-operation-id update_me --include-operation-id delete_user)
  else
    selection=("${enders[@]}")
  fi
  log "schemathesis: as $role"
  # filter_too_much: the generator draws strings for a pattern and throws away those over the
  # field's maxLength; a delivery address's contact (a phone number: `+`, separators, 7 to 15
  # digits, at most 20 characters) makes it throw away most, and the health check calls that an
  # error. The generated bodies are still sent: only the check is off.
  # From the report dir, where schemathesis keeps its own files (.schemathesis/).
  (cd "$out" && PYTHONPATH=$here SCHEMATHESIS_HOOKS=schemathesis_hooks "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$url/openapi.json" \
    "${selection[@]}" \
    --url "$url" \
    --header "Authorization: Bearer ${!token_var}" \
    --checks all \
    --exclude-checks ensure_resource_availability,use_after_free \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" \
    ${PICKPLE_SCHEMATHESIS_SEED:+--seed "$PICKPLE_SCHEMATHESIS_SEED"} \
    --workers 1 \
    --request-timeout 40 \
    --generation-database none \
    --suppress-health-check filter_too_much \
    --no-color \
    --report junit,ndjson --report-dir "$out/$role" \
    "$@") || status=1
done
log "schemathesis: $((SECONDS - started)) s for $roles; reports in $out"
exit $status

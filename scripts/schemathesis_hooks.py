"""schemathesis hooks for scripts/schemathesis.sh (SCHEMATHESIS_HOOKS=schemathesis_hooks).

An Idempotency-Key names one request: the same key with a different request is refused, 422
`idempotency_key_reused`, by design (README, "Guarantees a client sees"). Generated keys repeat
("0", "null"...) across different generated bodies, which would make valid requests fail for
the history of the key rather than for their content. So a valid generated key gets a random
suffix (still valid: visible ASCII, at most 128 characters); an invalid one is sent as it is, so
the negative cases stay negative. In a positive case, spaces and tabs in a key become '-'
(see BLANKS). Replays of a key are covered by gateway/tests/orders.rs.
"""
import os
import re
import uuid

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

VALID = re.compile(r"[!-~]{1,119}")
# Inner spaces and tabs: allowed in an HTTP field value, which schemathesis's positive header
# values may hold against the document's pattern (`^[!-~]*$`), but not in a key.
BLANKS = re.compile(r"[\t ]")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            key = sent = generated = headers[name]
            header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
            if isinstance(key, str) and header is not None and header.mode == GenerationMode.POSITIVE:
                key = sent = headers[name] = BLANKS.sub("-", key)
            if isinstance(key, str) and VALID.fullmatch(key):
                sent = headers[name] = f"{key}-{uuid.uuid4().hex[:8]}"
            if os.environ.get("PICKPLE_SCHEMATHESIS_KEY_LOG"):
                # What was generated and what is sent, by test case id, to look into a 400
                # `invalid_idempotency_key`.
                with open(os.environ["PICKPLE_SCHEMATHESIS_KEY_LOG"], "a") as log:
                    log.write(f"{getattr(case, 'id', '?')} {generated!r} {sent!r}\n")
    return None

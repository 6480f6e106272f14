"""Admin page: one contact's timeline, everything the bridge sent for it and everything Loops
reported about it (issue 14).

    GET  /contacts?email=...&account=ID    oldest first: the provider events received for the
                                           address (deliveries), the Loops calls Loops took,
                                           and Loops' own events (emails sent, delivered,
                                           bounced, opened...; contact events); ``account``:
                                           only that Loops account's

The address is matched exactly, in any case (the email indexes of ``deliveries`` and
``loops_events``); see :func:`bridge.outcomes.timeline`. No address, or one nothing is known
about, is a page that says so and offers the search again, not an error.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import outcomes
from bridge.admin.deliveries import REPORT_ALERTS, clock, said
from bridge.admin.formats import row_id, when
from bridge.admin.state import Admin
from bridge.models import Account

__all__ = ["routes"]

EMAIL_LIMIT = 320  # the longest address (RFC 3696 erratum 1690 says 254; be generous)


def _accounts(engine: Engine) -> dict[int, str]:
    with Session(engine) as session:
        return {a.id: a.name for a in session.exec(select(Account).order_by(col(Account.name)))}  # type: ignore[misc]


async def contact(request: Request) -> Response:
    admin = Admin.of(request)
    # An email address, or a platform's user id (?user_id=, or typed in the same box).
    params = request.query_params
    email = (params.get("email") or params.get("user_id") or "").strip()[:EMAIL_LIMIT]
    account_id = row_id(request.query_params.get("account"))
    accounts = await admin.run(_accounts, admin.engine)
    if account_id not in accounts:
        account_id = None
    entries = await admin.run(outcomes.timeline, admin.engine, email, account_id) if email else []
    return admin.render(
        request,
        "contacts/show.html",
        title=f"Contact {email}" if email else "Contacts",
        email=email,
        account_id=account_id,
        accounts=accounts,
        entries=entries,
        said=said,
        alerts=REPORT_ALERTS,
        when=when,
        clock=clock,
        iso=outcomes.iso,
    )


routes = [Route("/contacts", contact, methods=["GET"])]

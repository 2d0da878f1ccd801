"""What every public page (signup, events) shares: the query arguments it carries along
and how it is rendered, embedded in the cluster's website or not."""

from flask import Response, make_response, render_template, request


def public_args() -> dict:
    """Query arguments public pages carry along: embedded mode and a chosen language."""
    query, args = request.args, {}
    # `in` first: werkzeug's `get` of an absent name builds and catches an HTTP error
    # inside (~3 µs), and a public page asks on every request.
    if "embed" in query and query["embed"] == "1":
        args["embed"] = "1"
    if "lang" in query and query["lang"] in ("nb", "en"):
        args["lang"] = query["lang"]
    return args


def render_public(
    template: str, status: int = 200, *, frameable: tuple[str, ...] = (), **context
) -> Response:
    """A public page; embedded (`?embed=1`) on an endpoint in `frameable` it may be framed
    by any site (crm/security.py forbids framing everywhere else)."""
    args = public_args()
    embed = "embed" in args
    response = make_response(
        render_template(template, embed=embed, public_args=args, **context), status
    )
    if embed and request.endpoint in frameable:
        response.frame_ancestors = "*"
    return response

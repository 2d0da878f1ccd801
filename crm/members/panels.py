"""Extra panels on the company and contact pages, contributed by other areas.

Each entry is a template name. The detail pages include them in order, with the
record in the context as `company` or `contact`. An area appends its panel when it
is set up, e.g. `CONTACT_PANELS.append("subscriptions/_contact_consent_panel.html")`,
so the members area never has to know about consent or fees.
"""

COMPANY_PANELS: list[str] = []
CONTACT_PANELS: list[str] = []

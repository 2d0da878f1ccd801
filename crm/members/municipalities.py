"""The municipalities the cluster covers. Others are allowed; these are offered first."""

CLUSTER_MUNICIPALITIES: dict[str, str] = {
    "3401": "Kongsvinger",
    "3414": "Nord-Odal",
    "3415": "Sør-Odal",
    "3416": "Eidskog",
    "3417": "Grue",
    "3418": "Åsnes",
    "3419": "Våler",
}


def municipality_name(number: str | None) -> str:
    return CLUSTER_MUNICIPALITIES.get(number or "", "")


def municipality_label(number: str, name: str | None = None) -> str:
    """How a municipality is shown in lists and filters: "Kongsvinger (3401)"."""
    return f"{name or municipality_name(number) or number} ({number})"

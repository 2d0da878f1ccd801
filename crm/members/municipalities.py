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

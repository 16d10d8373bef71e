"""The admin's page: a server-rendered frame that `static/admin.js` fills from the admin API
(`services/gateway/admin_api.py`), the one place where admin rules live.

Anyone but an admin gets the same 404 page as for an address that does not exist: the page does not say
that there is something here.
"""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency, Provide
from litestar.response import Template

from services.gateway.pages import Viewer, not_found_page, page, provide_viewer


@get("/admin", include_in_schema=False, dependencies={"viewer": Provide(provide_viewer)})
async def admin_page(viewer: NamedDependency[Viewer | None]) -> Template:
    """Totals, most watched sections, students (search, disable, enable), health; 404 for non-admins."""
    if viewer is None or not viewer.is_admin:
        return not_found_page(viewer)
    return page("admin.html", viewer, active="/admin")

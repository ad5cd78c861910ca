"""Airflow plugin: Trainyard's pages and API inside Airflow's API server, at /trainyard.

The app is mounted with `fastapi_apps`; `external_views` puts "Trainyard jobs" in Airflow's
navigation, which shows the app's pages inside Airflow's UI (at /plugin/trainyard).

The routes authenticate and authorize every call themselves (see trainyard_web.py beside it):
Airflow does not protect a plugin's routes.

`deadline_references` registers the reference of the tenant DAGs' `max_queued` deadline
(operators/deployment/deadlines.py), which Airflow finds only through a plugin.
"""

from airflow.plugins_manager import AirflowPlugin
from trainyard_web import MOUNT, app

from operators.deployment.deadlines import JobQueueDeadline

APP = {"app": app, "url_prefix": MOUNT, "name": "Trainyard jobs"}
NAV_LINK = {
    "name": "Trainyard jobs",
    "href": f"{MOUNT}/",
    "icon": f"{MOUNT}/static/trainyard.svg",
    "destination": "nav",
    "url_route": "trainyard",
}


class TrainyardPlugin(AirflowPlugin):
    name = "trainyard"
    fastapi_apps = [APP]  # noqa: RUF012 (AirflowPlugin declares plain class attributes)
    external_views = [NAV_LINK]  # noqa: RUF012
    # The scheduler and the API server evaluate each tenant DAG's max_queued deadline with it.
    deadline_references = [JobQueueDeadline]  # noqa: RUF012

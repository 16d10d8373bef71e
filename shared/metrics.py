"""Every Prometheus metric of PickMyClass, defined once (prometheus-client, the process's default registry).

Each service exports the ones it moves on `GET /metrics` (workers on HEALTH_PORT, the gateway on its own
port). The Grafana dashboard and the alerts in `deploy/k8s` use exactly these names; `docs/runbook.md` says
what each means for an operator.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Per durable consumer (label `consumer`: pmc-scraper, pmc-detector, pmc-notifier).
MESSAGES_HANDLED = Counter(
    "pmc_messages_handled", "Messages acknowledged after their effects were done.", ["consumer"]
)
MESSAGES_RETRIED = Counter(
    "pmc_messages_retried", "Messages NAKed with a delay after a transient failure.", ["consumer"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "pmc_messages_dead_lettered", "Messages copied to the dead-letter stream and terminated.", ["consumer"]
)
HANDLER_SECONDS = Histogram(
    "pmc_handler_seconds",
    "Time to handle one fetched batch.",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_PENDING = Gauge(
    "pmc_consumer_pending", "JetStream num_pending: messages not yet delivered (the backlog).", ["consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    "pmc_consumer_ack_pending", "JetStream num_ack_pending: delivered, not yet acknowledged.", ["consumer"]
)
CONSUMER_REDELIVERED = Gauge(
    "pmc_consumer_redelivered", "JetStream num_redelivered: messages delivered more than once.", ["consumer"]
)

# Scheduler.
CHECKS_PUBLISHED = Counter(
    "pmc_checks_published", "Check events stored in the checks stream (not duplicates)."
)
SCHEDULER_CYCLE_SECONDS = Histogram(
    "pmc_scheduler_cycle_seconds",
    "Time to plan and publish one check cycle.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCHEDULER_LAST_CYCLE = Gauge(
    "pmc_scheduler_last_cycle_timestamp_seconds", "Unix time of the last check cycle that published."
)
FRESHNESS_SECONDS = Gauge(
    "pmc_freshness_seconds", "Age of the stored state of watched sections (stat: oldest, median).", ["stat"]
)
WATCHED_SECTIONS = Gauge(
    "pmc_watched_sections",
    "Watched sections, by whether a state is stored yet (checked, unchecked).",
    ["state"],
)

# Scraper: the class search.
SOURCE_REQUESTS = Counter(
    "pmc_source_requests",
    "Requests to the class search by outcome: ok, not_found, bad_shape (an answer the parser does not know),"
    " http_429, http_4xx, http_5xx, timeout, unreachable.",
    ["outcome"],
)
SOURCE_REQUEST_SECONDS = Histogram(
    "pmc_source_request_seconds",
    "Time of one class-search request.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15),
)
SOURCE_BREAKER_STATE = Gauge(
    "pmc_source_breaker_state",
    "1 for the shared circuit breaker's state as this scraper last saw it (closed, open, half_open,"
    " unknown: Redis unreachable, no requests), 0 for the others.",
    ["state"],
)
SOURCE_BREAKER_TRANSITIONS = Counter(
    "pmc_source_breaker_transitions", "Breaker transitions this scraper made, by the state entered.", ["to"]
)
SOURCE_BUDGET_WAIT_SECONDS = Histogram(
    "pmc_source_budget_wait_seconds",
    "Time a request waited for room in the fleet's request budget (ASU_REQUESTS_PER_MINUTE).",
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SOURCE_HOLDS = Counter(
    "pmc_source_holds", "429 answers from the class search, each pausing every scraper (Retry-After)."
)
SOURCE_MODE = Gauge(
    "pmc_source_mode",
    "1 for how the scraper reads the class search now (api, browser), 0 for the other.",
    ["mode"],
)
BROWSER_PAGES = Counter(
    "pmc_browser_pages",
    "Class-list pages read in Chromium, by outcome: ok, failed (no class-search answer), unavailable.",
    ["outcome"],
)
CHECKS_SKIPPED = Counter(
    "pmc_checks_skipped",
    "Checks acknowledged without a request, by reason: stale (their window had passed), blocked (the"
    " breaker or a 429 pause outlasted their window).",
    ["reason"],
)

# Detector.
CHANGES_DETECTED = Counter(
    "pmc_changes_detected",
    "Changes detected, by kind (a redelivered snapshot counts again; JetStream stores its change once).",
    ["kind"],
)
NOT_FOUND_STORMS = Counter(
    "pmc_not_found_storms",
    "Retirements held back because too many sections went missing at once (a source fault, not a fact).",
)

# Notifier.
EMAILS_SENT = Counter("pmc_emails_sent", "Emails the provider accepted, by kind.", ["kind"])
EMAILS_FAILED = Counter(
    "pmc_emails_failed",
    "Emails not accepted, by kind and reason (refused: the address; transient: retried later).",
    ["kind", "reason"],
)
EMAIL_FAILURE_REASONS = ("refused", "transient")


def export_email_kinds(kinds: tuple[str, ...]) -> None:
    """Export the email counters of these kinds at 0 from the start, so an alert on increase() sees the
    first one."""
    for kind in kinds:
        EMAILS_SENT.labels(kind)
        for reason in EMAIL_FAILURE_REASONS:
            EMAILS_FAILED.labels(kind, reason)


OPEN_TO_EMAIL_SECONDS = Histogram(
    "pmc_open_to_email_seconds",
    "From the snapshot that saw a seat open (scraped_at) to the provider accepting its email.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)

# Gateway.
SSE_CONNECTIONS = Gauge("pmc_sse_connections", "Open live-update (SSE) streams.")

"""Running it: metrics, health, admin API, dashboards (see DESIGN.md, "Ops"). Never imports rehearsal/."""

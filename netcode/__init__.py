"""Transport and state sync (see DESIGN.md, "Netcode"). Never imports physics/ or rehearsal/."""

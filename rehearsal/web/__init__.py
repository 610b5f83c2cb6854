"""The browser side of the server: static pages, scripts and the live view for mentors and observers."""

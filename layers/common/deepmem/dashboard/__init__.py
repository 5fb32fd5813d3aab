"""The admin page (static files under static/) and its server side."""

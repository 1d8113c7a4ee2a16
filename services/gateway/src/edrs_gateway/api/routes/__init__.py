"""The public API's routers, one module per resource; api/app.py includes them."""

"""The AAS HTTP/REST API edge (IDTA-01002 Part 2) over aiohttp; ``create_app`` builds it."""

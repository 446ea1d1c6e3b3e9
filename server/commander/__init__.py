"""The commander: the password-protected REST API under ``/api`` and the GUI at ``/``.

``create_app`` (in ``app``) builds the Flask app from the manager facade; ``wsgi.make_site``
serves it from Twisted's WSGI container in the server process.
"""

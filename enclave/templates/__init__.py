"""templates: reviewer-approved query shapes with typed parameters (the reviewer workflow)."""

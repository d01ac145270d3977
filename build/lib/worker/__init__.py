"""The standalone worker process: claims jobs through the repository and runs them."""

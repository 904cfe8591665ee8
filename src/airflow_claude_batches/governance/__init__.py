"""The rules of the deployment: the governance file, the id convention, prices, team binding, lint."""

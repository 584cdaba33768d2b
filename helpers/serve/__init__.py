"""The serving wing (notebooks 03, 06): LMDeploy pipeline, CPU engine, api_server, OpenAI client, web UI."""

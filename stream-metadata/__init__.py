"""nestos_stream: the NestOS stream metadata format (parse, validate, select artifacts)."""

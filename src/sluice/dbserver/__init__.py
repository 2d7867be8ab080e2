"""Database servers Sluice runs itself: one launcher (`launcher`), an engine part each."""

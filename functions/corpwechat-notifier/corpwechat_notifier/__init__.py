"""corpwechat-notifier: renders NotificationTemplates and sends them through the WeCom API."""

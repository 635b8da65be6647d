"""corpwechat-callback: WeCom's callbacks for our cards (approve or deny, as yourself)."""

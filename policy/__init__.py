"""The gamgui-websocket policy pack (``pulumi preview --policy-pack policy``)."""
